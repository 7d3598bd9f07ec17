"""Streams that outlive their connection.

Generation no longer belongs to one HTTP response: a producer task writes a stream's events into
the `StreamLog`, and every response — the first one and any resumption — is a reader following
the log from a position. What a disconnect means:

- a resumable stream whose last reader leaves keeps generating for `grace` seconds; if nobody
  resumes it in time it is aborted (`abandoned`);
- a stream that opted out of resumption is aborted as soon as its reader leaves (`abandoned`);
- `cancel()` (DELETE /v1/streams/{id}) aborts at once (`cancelled`);
- `shutdown()` ends what is still live when the server stops (`server_shutdown`).

A stream cut short says so: its log ends with an `event: error` naming the code above (or
`stream_failed` when the producer itself broke), then `[DONE]`, so a reader live or replaying
later can tell a cut answer from a whole one. An answer that ends normally carries its own end
(the protocol's finish reason, then `[DONE]`).

With a log shared by processes (Redis), a stream also outlives the process producing it: that
process holds a lease while it produces, and a reader reaching another process takes the stream
over once the lease has expired (`takeover.py`; `continuer` builds the rest of the answer).

Event ids are `<stream id>:<sequence number>`, so `Last-Event-ID` says where to resume. Stream
ids carry 128 random bits: they cannot be guessed. Each stream belongs to the caller that
started it (`owner`, an API key's digest); the routes answer 404 to anyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from streamchat.sse import framing
from streamchat.streams.log import Step, StreamEvent, StreamLog, StreamStoreUnavailableError, UnknownStreamError
from streamchat.streams.takeover import Continuer, LeasedLog, LeaseLostError, NotNowError, keep_lease

log = logging.getLogger(__name__)


class BadEventIdError(ValueError):
    pass


def parse_event_id(value: str, stream_id: str | None = None) -> tuple[str, int]:
    """`<stream id>:<n>` → (stream id, n); checks it belongs to `stream_id` when given."""
    sid, sep, num = value.strip().rpartition(":")
    if not sep or not sid or not (num.isascii() and num.isdigit()):
        raise BadEventIdError(f"'{value}' is not an event id of the form <stream id>:<number>")
    if stream_id is not None and sid != stream_id:
        raise BadEventIdError(f"event id '{value}' belongs to another stream than '{stream_id}'")
    return sid, int(num)


@dataclass(frozen=True)
class Ending:
    """Why a stream was cut short, as its last error event says."""

    code: str
    message: str


CANCELLED = Ending("cancelled", "the stream was cancelled")
ABANDONED = Ending("abandoned", "no reader came back in time; the answer was stopped")
SHUTDOWN = Ending("server_shutdown", "the server is shutting down; send the request again")
STORE_UNAVAILABLE = Ending("stream_store_unavailable", "the stream store cannot be reached")
PRODUCER_LOST = Ending("producer_lost", "the process producing this answer stopped and it cannot be continued here")


Events = AsyncIterator[StreamEvent | Step]


@dataclass
class _Live:
    producer: asyncio.Task
    events: Events
    resumable: bool
    readers: int = 0
    reaper: asyncio.Task | None = None
    ending: Ending | None = None
    entered: bool = False  # the producer has started iterating its events
    detached: bool = False  # runs to its end whether or not anyone reads it (background work)
    closing: Closing | None = None  # the events that end it when cut short, in its protocol's shape
    keeper: asyncio.Task | None = None  # renews its lease (a log shared by processes)
    lost: bool = False  # another process took it over: write nothing more


@dataclass
class _Reader:
    """One response reading a stream; `live` once the stream is produced in this process."""

    live: _Live | None


@dataclass
class StreamCounters:
    started: int = 0
    resumed: int = 0
    disconnects: int = 0
    abandoned: int = 0
    cancelled: int = 0
    taken_over: int = 0  # streams this process continued after their producer elsewhere stopped


@dataclass
class StreamManager:
    log: StreamLog
    grace: float = 30.0
    counters: StreamCounters = field(default_factory=StreamCounters)
    continuer: Continuer | None = None  # continues a stream taken over from a dead producer (api/takeover.py)
    _live: dict[str, _Live] = field(default_factory=dict)

    @property
    def leases(self) -> LeasedLog | None:
        """The log, when it is shared by processes and its writers hold leases."""
        return self.log if isinstance(self.log, LeasedLog) else None

    async def start(
        self,
        events: Events,
        resumable: bool = True,
        owner: str | None = None,
        detached: bool = False,
        closing: Closing | None = None,
        continuation: dict | None = None,
    ) -> str:
        """Start producing `events` into a new stream owned by `owner`; return its id. A `detached`
        stream is never abandoned: it runs to its end (or a cancel) even when no reader is left.
        `closing` gives the events that end it when cut short (default: OpenAI's error, then `[DONE]`).
        `continuation`: the protocol's record another process needs to continue it (a shared log)."""
        stream_id = secrets.token_hex(16)
        await self.log.create(stream_id, owner)
        if continuation is not None and self.leases is not None:
            await self.leases.describe(stream_id, continuation)
        self._begin(stream_id, events, resumable, detached=detached, closing=closing)
        self.counters.started += 1
        return stream_id

    def _begin(self, stream_id: str, events: Events, resumable: bool, **kw) -> _Live:
        task = asyncio.create_task(self._produce(stream_id, events), name=f"stream-{stream_id}")
        live = self._live[stream_id] = _Live(task, events, resumable, **kw)
        if self.leases is not None:
            live.keeper = asyncio.create_task(keep_lease(self.leases, stream_id, lambda: self._lost(live)))
        return live

    @staticmethod
    def _lost(live: _Live) -> None:
        live.lost = True
        live.producer.cancel()

    async def exists(self, stream_id: str, owner: str | None = None) -> bool:
        """Whether `stream_id` is known and belongs to `owner` (a stream of another caller is not there)."""
        return await self.log.exists(stream_id) and await self.log.owner(stream_id) == owner

    async def finished(self, stream_id: str) -> bool:
        return await self.log.is_closed(stream_id)

    async def last_seq(self, stream_id: str) -> int:
        return await self.log.last_seq(stream_id)

    async def read(self, stream_id: str, after: int = -1, resumed: bool = False) -> AsyncIterator[bytes]:
        """Framed events of `stream_id` after `after`, live until the stream ends. A stream produced
        nowhere any more is taken over by this process, when it can (`_watch`)."""
        reader = _Reader(self._join(self._live.get(stream_id)))
        if resumed:
            self.counters.resumed += 1
        watcher = None
        leases, continuer = self.leases, self.continuer
        if reader.live is None and leases is not None and continuer is not None:
            watcher = asyncio.create_task(self._watch(stream_id, reader, leases, continuer))
        completed = False
        try:
            try:
                async for numbered in self.log.follow(stream_id, after):
                    name, data = numbered.event
                    yield framing.encode_event(data, event=name, id=f"{stream_id}:{numbered.seq}")
            except StreamStoreUnavailableError as exc:  # the reader learns why its stream stops here
                log.warning("stream %s: %s", stream_id, exc)
                closing = (reader.live.closing if reader.live is not None else None) or openai_closing
                for event in closing(STORE_UNAVAILABLE):  # in the stream's own protocol
                    yield framing.encode_event(event.data, event=event.name)
            completed = True
        finally:
            if watcher is not None:
                watcher.cancel()
            live = reader.live
            if live is not None:
                live.readers -= 1
                if not completed and live.readers == 0 and stream_id in self._live:
                    self.counters.disconnects += 1
                    self._reader_left(stream_id, live)

    @staticmethod
    def _join(live: _Live | None) -> _Live | None:
        """Count one more reader of `live`: it is no longer at risk of being abandoned."""
        if live is not None:
            live.readers += 1
            if live.reaper is not None:
                live.reaper.cancel()
                live.reaper = None
        return live

    async def _watch(self, stream_id: str, reader: _Reader, leases: LeasedLog, continuer: Continuer) -> None:
        """While `reader` follows a stream produced elsewhere: take it over once its producer's
        lease has expired (exactly one process wins the claim), or join it when this process did."""
        pause = max(0.05, leases.lease_ttl / 2)
        while stream_id not in self._live:
            try:
                if await self.log.is_closed(stream_id):
                    return
                claimed = await leases.claim(stream_id)
            except (StreamStoreUnavailableError, UnknownStreamError):
                return  # the reader learns it from the log itself
            # shielded: once claimed, the stream is adopted even if this reader leaves meanwhile
            if not (claimed and await asyncio.shield(self._take_over(stream_id, leases, continuer))):
                await asyncio.sleep(pause)
        reader.live = self._join(self._live.get(stream_id))

    async def _take_over(self, stream_id: str, leases: LeasedLog, continuer: Continuer) -> bool:
        """Continue a stream whose lease this process has just claimed; False (lease given back)
        when it cannot right now."""
        try:
            adoption = await continuer(stream_id, await leases.continuation(stream_id))
        except NotNowError as exc:
            log.info("stream %s: not taken over now: %s", stream_id, exc)
            with contextlib.suppress(StreamStoreUnavailableError):
                await leases.release(stream_id)
            return False
        except Exception:
            log.exception("stream %s: taking over failed", stream_id)
            adoption = None
        if adoption is None:  # it cannot be continued here: end it, so nobody waits for it forever
            events: Events = _iterate(openai_closing(PRODUCER_LOST))
            live = self._begin(stream_id, events, True, detached=True)
        else:
            live = self._begin(stream_id, adoption.events, True, closing=adoption.closing)
            live.reaper = asyncio.create_task(self._reap(stream_id, live))  # cancelled as its reader joins
            log.info("stream %s taken over by this process", stream_id)
            self.counters.taken_over += 1
        return True

    async def cancel(self, stream_id: str) -> bool:
        live = self._live.get(stream_id)
        if live is None:
            return False
        self.counters.cancelled += 1
        await self._stop(stream_id, live, CANCELLED)
        return True

    @property
    def live_count(self) -> int:
        return len(self._live)

    async def shutdown(self) -> None:
        """End every live stream; its readers get a `server_shutdown` error event, then `[DONE]`."""
        for stream_id, live in list(self._live.items()):
            await self._stop(stream_id, live, SHUTDOWN)

    def _reader_left(self, stream_id: str, live: _Live) -> None:
        if live.detached:
            return
        if not live.resumable:
            live.ending = live.ending or ABANDONED
            live.producer.cancel()
        else:
            live.reaper = asyncio.create_task(self._reap(stream_id, live))

    async def _reap(self, stream_id: str, live: _Live) -> None:
        await asyncio.sleep(self.grace)
        if live.readers == 0 and stream_id in self._live:
            log.info("stream %s abandoned after %.0f s without a reader", stream_id, self.grace)
            self.counters.abandoned += 1
            live.ending = live.ending or ABANDONED
            live.producer.cancel()

    async def _stop(self, stream_id: str, live: _Live, ending: Ending) -> None:
        live.ending = live.ending or ending
        # A generator never started cannot run its clean-up, and the request's abort lives there:
        # let the producer take its first step (it only awaits its first event) before cancelling it.
        for _ in range(100):
            if live.entered or live.producer.done():
                break
            await asyncio.sleep(0)
        live.producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await live.producer
        if stream_id in self._live:  # cancelled before its first step: `_produce` never ran
            await self._end(stream_id)

    async def _produce(self, stream_id: str, events: Events) -> None:
        failure: Ending | None = None
        live = self._live.get(stream_id)
        if live is not None:
            live.entered = True
        try:
            async for item in events:
                if isinstance(item, Step):
                    await self.log.append_step(stream_id, item)
                else:
                    await self.log.append(stream_id, item)
        except asyncio.CancelledError:
            raise
        except LeaseLostError as exc:  # another process writes this stream now
            log.warning("%s", exc)
            if live is not None:
                live.lost = True
        except Exception as exc:  # a producer bug must end the stream, not leave readers hanging
            log.exception("stream %s failed", stream_id)
            failure = Ending("stream_failed", str(exc))
        finally:
            await self._end(stream_id, failure)

    async def _end(self, stream_id: str, failure: Ending | None = None) -> None:
        """Close the stream's log, saying how it ended unless it ended by itself."""
        live = self._live.pop(stream_id, None)
        if live is None:
            return
        if live.reaper is not None:
            live.reaper.cancel()
        if live.keeper is not None:
            live.keeper.cancel()
        ending = failure or live.ending
        with contextlib.suppress(UnknownStreamError, StreamStoreUnavailableError, LeaseLostError):
            if not live.lost:  # else the stream goes on in the process that took it over
                if ending is not None or live.producer.cancelled() or live.producer.cancelling():
                    for event in (live.closing or openai_closing)(ending):  # readers still attached end cleanly
                        await self.log.append(stream_id, event)
                await self.log.close(stream_id)
        with contextlib.suppress(Exception):
            await live.events.aclose()  # type: ignore[attr-defined]


DONE_EVENT = StreamEvent(None, framing.DONE)
Closing = Callable[[Ending | None], list[StreamEvent]]


def openai_closing(ending: Ending | None) -> list[StreamEvent]:
    return [*([error_event(ending.message, ending.code)] if ending is not None else []), DONE_EVENT]


def error_event(message: str, code: str) -> StreamEvent:
    """The OpenAI error object as an SSE `error` event: what every protocol sends when cut short."""
    kind = "stream_cancelled" if code in (CANCELLED.code, ABANDONED.code) else "server_error"
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return StreamEvent("error", json.dumps(body, ensure_ascii=False))


async def _iterate(events: list[StreamEvent]) -> Events:
    for event in events:
        yield event
