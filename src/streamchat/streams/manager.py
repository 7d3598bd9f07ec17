"""Streams that outlive their connection.

Generation no longer belongs to one HTTP response: a producer task writes a stream's events into
the `StreamLog`, and every response — the first one and any resumption — is a reader following
the log from a position. What a disconnect means:

- a resumable stream whose last reader leaves keeps generating for `grace` seconds; if nobody
  resumes it in time it is aborted (`abandoned`);
- a stream that opted out of resumption is aborted as soon as its reader leaves;
- `cancel()` (DELETE /v1/streams/{id}) aborts at once.

Event ids are `<stream id>:<sequence number>`, so `Last-Event-ID` says where to resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from streamchat.sse import framing
from streamchat.streams.log import StreamEvent, StreamLog, UnknownStreamError

log = logging.getLogger(__name__)


class BadEventIdError(ValueError):
    pass


def parse_event_id(value: str, stream_id: str | None = None) -> tuple[str, int]:
    """`<stream id>:<n>` → (stream id, n); checks it belongs to `stream_id` when given."""
    sid, sep, num = value.strip().rpartition(":")
    if not sep or not sid or not num.isdigit():
        raise BadEventIdError(f"'{value}' is not an event id of the form <stream id>:<number>")
    if stream_id is not None and sid != stream_id:
        raise BadEventIdError(f"event id '{value}' belongs to another stream than '{stream_id}'")
    return sid, int(num)


@dataclass
class _Live:
    producer: asyncio.Task
    resumable: bool
    readers: int = 0
    reaper: asyncio.Task | None = None
    final_error: str | None = None


@dataclass
class StreamCounters:
    started: int = 0
    resumed: int = 0
    disconnects: int = 0
    abandoned: int = 0
    cancelled: int = 0


@dataclass
class StreamManager:
    log: StreamLog
    grace: float = 30.0
    counters: StreamCounters = field(default_factory=StreamCounters)
    _live: dict[str, _Live] = field(default_factory=dict)

    async def start(self, events: AsyncIterator[StreamEvent], resumable: bool = True) -> str:
        """Start producing `events` into a new stream; return its id."""
        stream_id = uuid.uuid4().hex[:20]
        await self.log.create(stream_id)
        task = asyncio.create_task(self._produce(stream_id, events), name=f"stream-{stream_id}")
        self._live[stream_id] = _Live(task, resumable)
        self.counters.started += 1
        return stream_id

    async def exists(self, stream_id: str) -> bool:
        return await self.log.exists(stream_id)

    async def finished(self, stream_id: str) -> bool:
        return await self.log.is_closed(stream_id)

    async def last_seq(self, stream_id: str) -> int:
        return await self.log.last_seq(stream_id)

    async def read(self, stream_id: str, after: int = -1, resumed: bool = False) -> AsyncIterator[bytes]:
        """Framed events of `stream_id` after `after`, live until the stream ends."""
        live = self._live.get(stream_id)
        if resumed:
            self.counters.resumed += 1
        if live is not None:
            live.readers += 1
            if live.reaper is not None:
                live.reaper.cancel()
                live.reaper = None
        completed = False
        try:
            async for numbered in self.log.follow(stream_id, after):
                name, data = numbered.event
                yield framing.encode_event(data, event=name, id=f"{stream_id}:{numbered.seq}")
            completed = True
        finally:
            if live is not None:
                live.readers -= 1
                if not completed and live.readers == 0 and stream_id in self._live:
                    self.counters.disconnects += 1
                    self._reader_left(stream_id, live)

    async def cancel(self, stream_id: str) -> bool:
        live = self._live.get(stream_id)
        if live is None:
            return False
        self.counters.cancelled += 1
        await self._stop(live)
        return True

    @property
    def live_count(self) -> int:
        return len(self._live)

    async def shutdown(self, final_error: str | None = None) -> None:
        """End every live stream; readers get `final_error` as an error event, then `[DONE]`."""
        for live in list(self._live.values()):
            live.final_error = final_error
            await self._stop(live)

    def _reader_left(self, stream_id: str, live: _Live) -> None:
        if not live.resumable:
            live.producer.cancel()
        else:
            live.reaper = asyncio.create_task(self._reap(stream_id, live))

    async def _reap(self, stream_id: str, live: _Live) -> None:
        await asyncio.sleep(self.grace)
        if live.readers == 0 and stream_id in self._live:
            log.info("stream %s abandoned after %.0f s without a reader", stream_id, self.grace)
            self.counters.abandoned += 1
            live.producer.cancel()

    async def _stop(self, live: _Live) -> None:
        live.producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await live.producer

    async def _produce(self, stream_id: str, events: AsyncIterator[StreamEvent]) -> None:
        try:
            async for event in events:
                await self.log.append(stream_id, event)
        except asyncio.CancelledError:
            live = self._live.get(stream_id)
            if live is not None and live.final_error:
                await self.log.append(stream_id, _error_event(live.final_error, "server_shutdown"))
            await self.log.append(stream_id, DONE_EVENT)  # readers still attached end cleanly
            raise
        except Exception as exc:  # a producer bug must end the stream, not leave readers hanging
            log.exception("stream %s failed", stream_id)
            await self.log.append(stream_id, _error_event(str(exc)))
            await self.log.append(stream_id, DONE_EVENT)
        finally:
            with contextlib.suppress(Exception):
                await events.aclose()  # type: ignore[attr-defined]
            with contextlib.suppress(UnknownStreamError):
                await self.log.close(stream_id)
            live = self._live.pop(stream_id, None)
            if live is not None and live.reaper is not None:
                live.reaper.cancel()


DONE_EVENT = StreamEvent(None, framing.DONE)


def _error_event(message: str, code: str | None = None) -> StreamEvent:
    body = {"error": {"message": message, "type": "server_error", "param": None, "code": code}}
    return StreamEvent("error", json.dumps(body, ensure_ascii=False))
