"""The events this process wrote to a shared log, kept here for readers in this same process.

With the Redis log, a reader in the process that produces its stream would otherwise follow it
with one blocking `XREAD` per event: a round trip to Redis and a wake-up of the event loop for
each token, on the cores the engine computes on. The producer already has every event in hand,
so it keeps them in a `Mirror` once Redis has acknowledged them, and local readers follow that.
Redis stays the record: an event is mirrored only after it was written there (so a local reader
never sees what a reader elsewhere could not), other processes and resumptions after a restart
read Redis, and a mirror that stops being fed (the stream closed, its lease went to another
process, Redis failed) sends its readers on to Redis from where they are.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from streamchat.streams.log import NumberedEvent, StreamEvent, wake


@dataclass
class Mirror:
    """One stream's events, as written by this process from its start."""

    events: list[NumberedEvent] = field(default_factory=list)
    ended: bool = False  # nothing more comes through here
    closed: bool = False  # ... because the stream is closed (else the rest is in the shared log)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, last_seq: int, events: tuple[StreamEvent, ...]) -> None:
        """`events`, numbered up to `last_seq` as the shared log numbered them."""
        start = last_seq - len(events) + 1
        if start != len(self.events):  # a gap: this process did not write something in between
            self.end(closed=False)
            return
        self.events += [NumberedEvent(start + i, event) for i, event in enumerate(events)]
        wake(self)

    def end(self, closed: bool) -> None:
        if not self.ended:
            self.ended, self.closed = True, closed
            wake(self)

    async def follow(self, after: int) -> AsyncIterator[NumberedEvent]:
        """Events with `seq > after` until the mirror ends (the caller then reads the shared log on
        from the last one yielded, unless `closed`)."""
        pos = after + 1
        while True:
            while pos < len(self.events):
                yield self.events[pos]
                pos += 1
            if self.ended:
                return
            await self.changed.wait()


class Mirrors:
    """The mirrors of the streams this process is producing."""

    def __init__(self) -> None:
        self._by_stream: dict[str, Mirror] = {}

    def start(self, stream_id: str) -> None:
        self.stop(stream_id, closed=False)
        self._by_stream[stream_id] = Mirror()

    def get(self, stream_id: str) -> Mirror | None:
        return self._by_stream.get(stream_id)

    def wrote(self, stream_id: str, last_seq: int, events: tuple[StreamEvent, ...]) -> None:
        mirror = self._by_stream.get(stream_id)
        if mirror is not None:
            mirror.add(last_seq, events)
            if mirror.ended:
                del self._by_stream[stream_id]

    def stop(self, stream_id: str, closed: bool) -> None:
        """No more events through this process; readers attached finish from the shared log."""
        mirror = self._by_stream.pop(stream_id, None)
        if mirror is not None:
            mirror.end(closed)

    def __len__(self) -> int:
        return len(self._by_stream)
