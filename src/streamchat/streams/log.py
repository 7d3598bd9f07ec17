"""The stream log: every event a stream sends, numbered, kept for replay after a dropped connection.

A stream's events are appended by its producer and read by any number of followers, each from
its own position. `StreamLog` is the interface; `MemoryStreamLog` keeps streams in this process
(a shared store for several replicas can implement the same interface). The log is bounded: a
stream is forgotten `retention` seconds after it ends, and when the total size passes
`max_bytes` the oldest finished streams go first.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol


class StreamEvent(NamedTuple):
    """One event a protocol sends: its SSE `event:` name (None: the default, `message`) and its data."""

    name: str | None
    data: str


@dataclass(frozen=True)
class NumberedEvent:
    """An event as the log keeps it: `seq` is its place in the stream (the `n` of its id `<stream>:<n>`)."""

    seq: int
    event: StreamEvent


@dataclass(frozen=True)
class Step:
    """What one engine step added to a stream: its events and the token ids behind them, written in
    one go, so the log a dead process leaves ends between two steps and the tokens logged are
    exactly those whose text was sent (`takeover.py` continues from there). A step may hold tokens
    and no event (text held back); `final` marks the answer's last step."""

    events: tuple[StreamEvent, ...]
    token_ids: tuple[int, ...] = ()
    final: bool = False


class UnknownStreamError(KeyError):
    pass


class StreamStoreUnavailableError(RuntimeError):
    """The store behind the log (Redis) cannot be reached: new streams get a 503, live ones end."""


class StreamLog(Protocol):
    async def create(self, stream_id: str, owner: str | None = None) -> None:
        """A new, empty stream belonging to `owner` (an API key's digest; None on an open server)."""
        ...

    async def owner(self, stream_id: str) -> str | None: ...

    async def append(self, stream_id: str, event: StreamEvent) -> int: ...

    async def append_step(self, stream_id: str, step: Step) -> None: ...

    async def close(self, stream_id: str) -> None: ...

    async def exists(self, stream_id: str) -> bool: ...

    async def is_closed(self, stream_id: str) -> bool: ...

    async def last_seq(self, stream_id: str) -> int: ...

    def follow(self, stream_id: str, after: int) -> AsyncIterator[NumberedEvent]: ...


@dataclass
class _Record:
    owner: str | None = None
    events: list[NumberedEvent] = field(default_factory=list)
    closed_at: float | None = None
    size: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class _Waking(Protocol):
    changed: asyncio.Event


def wake(followers: _Waking) -> None:
    """Wake every follower waiting on `followers.changed`; the next ones wait on a fresh event."""
    followers.changed.set()
    followers.changed = asyncio.Event()  # followers already woken hold the old event


class MemoryStreamLog:
    def __init__(self, retention: float = 600.0, max_bytes: int = 64 * 2**20) -> None:
        self.retention = retention
        self.max_bytes = max_bytes
        self._streams: OrderedDict[str, _Record] = OrderedDict()
        self._size = 0

    async def create(self, stream_id: str, owner: str | None = None) -> None:
        self._expire()
        if stream_id in self._streams:  # a new stream of the same id replaces the old one, size included
            self._drop(stream_id)
        self._streams[stream_id] = _Record(owner)

    async def owner(self, stream_id: str) -> str | None:
        return self._get(stream_id).owner

    async def append(self, stream_id: str, event: StreamEvent) -> int:
        rec = self._get(stream_id)
        seq = len(rec.events)
        rec.events.append(NumberedEvent(seq, event))
        n = len(event.data.encode("utf-8", "surrogatepass")) + 32
        rec.size += n
        self._size += n
        wake(rec)
        if self._size > self.max_bytes:
            self._evict()
        return seq

    async def append_step(self, stream_id: str, step: Step) -> None:
        """The step's events (this process's memory dies with its producer: no tokens to keep)."""
        for event in step.events:
            await self.append(stream_id, event)

    async def close(self, stream_id: str) -> None:
        rec = self._streams.get(stream_id)
        if rec is not None and rec.closed_at is None:
            rec.closed_at = time.monotonic()
            wake(rec)

    async def exists(self, stream_id: str) -> bool:
        self._expire()
        return stream_id in self._streams

    async def is_closed(self, stream_id: str) -> bool:
        return self._get(stream_id).closed_at is not None

    async def last_seq(self, stream_id: str) -> int:
        return len(self._get(stream_id).events) - 1

    async def follow(self, stream_id: str, after: int) -> AsyncIterator[NumberedEvent]:
        """Events with `seq > after`, then new ones as they come, until the stream is closed."""
        rec = self._get(stream_id)
        pos = after + 1
        while True:
            while pos < len(rec.events):
                yield rec.events[pos]
                pos += 1
            if rec.closed_at is not None:
                return
            await rec.changed.wait()

    def _get(self, stream_id: str) -> _Record:
        rec = self._streams.get(stream_id)
        if rec is None:
            raise UnknownStreamError(stream_id)
        return rec

    def _expire(self) -> None:
        now = time.monotonic()
        for sid in [
            s for s, r in self._streams.items() if r.closed_at is not None and now - r.closed_at > self.retention
        ]:
            self._drop(sid)

    def _evict(self) -> None:
        for sid in [s for s, r in self._streams.items() if r.closed_at is not None]:
            if self._size <= self.max_bytes:
                return
            self._drop(sid)

    def _drop(self, stream_id: str) -> None:
        rec = self._streams.pop(stream_id)
        self._size -= rec.size
