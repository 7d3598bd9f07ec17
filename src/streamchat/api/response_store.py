"""Stored Responses API responses: bounded by count and age, each visible only to its owner.

A stored response keeps what later requests need: the object `GET /v1/responses/{id}` returns
(updated while a background response runs), the conversation it ended (for
`previous_response_id`) and the stream its events went to (to re-attach with `starting_after`).

Two stores share one async interface (`ResponseStore`), so the routes do not care which runs:
this process's memory (`MemoryResponseStore`, the default) or Redis, shared by every process on
it (`response_store_redis.py`, with `--stream-store redis://…`). Either way the process running a
response keeps its live object (the run mutates it) in `LiveRuns`, with the way to stop it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class StoredResponse:
    id: str
    owner: str | None
    body: dict[str, Any]  # the response object as the API returns it
    conversation: list[dict[str, Any]] = field(default_factory=list)  # chat messages, this answer included
    stream_id: str | None = None
    created: float = field(default_factory=time.monotonic)


class ResponseStore(Protocol):
    async def put(self, item: StoredResponse) -> None:
        """Store a new response (the oldest go once the store is full)."""
        ...

    async def get(self, response_id: str, owner: str | None) -> StoredResponse | None:
        """The response if it is stored and `owner`'s; another caller's is as absent as an unknown one."""
        ...

    async def delete(self, response_id: str, owner: str | None) -> StoredResponse | None: ...

    async def save(self, item: StoredResponse) -> None:
        """Write a stored response's current state where other processes read it (never re-creating
        one deleted or expired meanwhile)."""
        ...

    def running(self, item: StoredResponse, abort: Callable[[], None]) -> AbstractContextManager[None]:
        """Around a response's run in this process: while it lasts, `cancel` reaches `abort`."""
        ...

    async def cancel(self, item: StoredResponse) -> None:
        """Ask the process running `item` to stop it; returns without waiting for it to end."""
        ...

    async def close(self) -> None: ...


class LiveRuns:
    """The responses this process is running: their live objects, and how to stop each."""

    def __init__(self) -> None:
        self._runs: dict[str, tuple[StoredResponse, Callable[[], None]]] = {}

    @contextmanager
    def running(self, item: StoredResponse, abort: Callable[[], None]) -> Iterator[None]:
        self._runs[item.id] = (item, abort)
        try:
            yield
        finally:
            self._runs.pop(item.id, None)

    def get(self, response_id: str) -> StoredResponse | None:
        run = self._runs.get(response_id)
        return run[0] if run is not None else None

    def abort(self, response_id: str) -> bool:
        """Stop the run if it is here; whether it was."""
        run = self._runs.get(response_id)
        if run is not None:
            run[1]()
        return run is not None

    def ids(self) -> list[str]:
        return list(self._runs)


class MemoryResponseStore:
    """This process's responses, in an ordered dict: the oldest go first by count and by age."""

    def __init__(self, size: int, ttl: float) -> None:
        self._size, self._ttl = size, ttl
        self._items: OrderedDict[str, StoredResponse] = OrderedDict()
        self._live = LiveRuns()
        self._asked: set[str] = set()  # cancelled before their run started

    async def put(self, item: StoredResponse) -> None:
        self._expire()
        self._items[item.id] = item
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    async def get(self, response_id: str, owner: str | None) -> StoredResponse | None:
        self._expire()
        item = self._items.get(response_id)
        return item if item is not None and item.owner == owner else None

    async def delete(self, response_id: str, owner: str | None) -> StoredResponse | None:
        item = await self.get(response_id, owner)
        if item is not None:
            del self._items[response_id]
        return item

    async def save(self, item: StoredResponse) -> None:
        """Nothing to do: the stored object is the live one."""

    @contextmanager
    def running(self, item: StoredResponse, abort: Callable[[], None]) -> Iterator[None]:
        with self._live.running(item, abort):
            if item.id in self._asked:
                self._asked.discard(item.id)
                abort()
            yield

    async def cancel(self, item: StoredResponse) -> None:
        if not self._live.abort(item.id):  # its run has not taken its first step yet
            self._asked.add(item.id)

    async def close(self) -> None:
        """Nothing to release."""

    def _expire(self) -> None:
        cutoff = time.monotonic() - self._ttl
        while self._items:
            oldest = next(iter(self._items.values()))
            if oldest.created >= cutoff:
                break
            self._items.popitem(last=False)
