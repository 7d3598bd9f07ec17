"""Stored Responses API responses: bounded by count and age, each visible only to its owner.

A stored response keeps what later requests need: the object `GET /v1/responses/{id}` returns
(updated while a background response runs), the conversation it ended (for
`previous_response_id`), the stream its events went to (to re-attach with `starting_after`) and
the engine request still running (to cancel it).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any


@dataclass
class StoredResponse:
    id: str
    owner: str | None
    body: dict[str, Any]  # the response object as the API returns it
    conversation: list[dict[str, Any]] = field(default_factory=list)  # chat messages, this answer included
    stream_id: str | None = None
    request_id: str | None = None  # the engine request while it runs
    created: float = field(default_factory=time.monotonic)


class ResponseStore:
    def __init__(self, size: int, ttl: float) -> None:
        self._size, self._ttl = size, ttl
        self._items: OrderedDict[str, StoredResponse] = OrderedDict()

    def put(self, item: StoredResponse) -> None:
        self._expire()
        self._items[item.id] = item
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def get(self, response_id: str, owner: str | None) -> StoredResponse | None:
        """The response if it is stored and `owner`'s; another caller's is as absent as an unknown one."""
        self._expire()
        item = self._items.get(response_id)
        return item if item is not None and item.owner == owner else None

    def delete(self, response_id: str, owner: str | None) -> StoredResponse | None:
        item = self.get(response_id, owner)
        if item is not None:
            del self._items[response_id]
        return item

    def _expire(self) -> None:
        cutoff = time.monotonic() - self._ttl
        while self._items:
            oldest = next(iter(self._items.values()))
            if oldest.created >= cutoff:
                break
            self._items.popitem(last=False)
