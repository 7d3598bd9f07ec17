"""The stream log on Redis (`--stream-store redis://host:port/db`): every process sees every stream.

One Redis stream per answer, `sc:s:<id>`, its entries numbered by their ids: event n is entry
`0-(n+1)`, so an event's place survives any process and a reader resumes with one `XRANGE`.
Closing adds a sentinel entry `1-0`, greater than every event id, so a blocked `XREAD` wakes up
and knows the stream has ended. Beside it a hash `sc:m:<id>` holds the owner and the state.
Both keys expire `retention` seconds after the last write; a live stream refreshes them as it
writes. Streams are capped at `max_events` entries (oldest trimmed), like the memory log's bound.

Redis being unreachable raises `StreamStoreUnavailableError`: new streams are refused with a 503 and
readers of live ones get an error event; the client reconnects by itself once Redis is back.

The writer of a stream holds a lease `sc:l:<id>` (`takeover.py`): it is taken when the stream is
created, renewed by every write and by the manager while the stream is quiet, and ended by
`close`. Every write is one Lua script (`redis_scripts.py`) that checks the lease first, so a
process that lost it cannot write. Each step's token ids go to `sc:t:<id>` in the same script as
its events, and the protocol's continuation record to the meta hash.

Readers in the process producing a stream follow its events from this process's memory once Redis
has them (`local_mirror.py`): no `XREAD` per event for them; other processes read Redis. The
writes of all streams woken by one engine step go in one pipeline (`redis_batch.py`).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streamchat.streams import redis_scripts
from streamchat.streams.local_mirror import Mirrors
from streamchat.streams.log import NumberedEvent, Step, StreamEvent, StreamStoreUnavailableError, UnknownStreamError
from streamchat.streams.redis_batch import ScriptBatcher
from streamchat.streams.takeover import Continuation, LeaseLostError

UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)


async def reached(command: Any, store: str = "stream store") -> Any:
    """Await a Redis command; Redis out of reach becomes `StreamStoreUnavailableError` (a 503)."""
    try:
        return await command
    except UNREACHABLE as exc:
        raise StreamStoreUnavailableError(f"the {store} cannot be reached: {exc}") from exc


def _events_key(stream_id: str) -> str:
    return f"sc:s:{stream_id}"


def _meta_key(stream_id: str) -> str:
    return f"sc:m:{stream_id}"


def _lease_key(stream_id: str) -> str:
    return f"sc:l:{stream_id}"


def _tokens_key(stream_id: str) -> str:
    return f"sc:t:{stream_id}"


def _keys(stream_id: str) -> list[str]:
    return [_events_key(stream_id), _meta_key(stream_id), _lease_key(stream_id), _tokens_key(stream_id)]


def _entry_id(seq: int) -> str:
    return f"0-{seq + 1}"


def _seq(entry_id: bytes | str) -> int | None:
    """The event number of an entry id; None for the closing sentinel."""
    ms, _, n = (entry_id.decode() if isinstance(entry_id, bytes) else entry_id).partition("-")
    return int(n) - 1 if ms == "0" else None


class RedisStreamLog:
    def __init__(
        self,
        url: str,
        retention: float = 600.0,
        max_events: int = 100_000,
        block_ms: int = 2000,
        lease: float = 5.0,
    ) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=10)
        self.retention = max(1, int(retention))
        self.max_events = max_events
        self.block_ms = block_ms
        self.lease_ttl = lease
        self._lease_ms = max(1, int(lease * 1000))
        self.token = secrets.token_hex(8)  # this process's name on the leases it holds
        self._append = ScriptBatcher(self.client, self.client.register_script(redis_scripts.APPEND_STEP))
        self._renew = self.client.register_script(redis_scripts.RENEW)
        self._claim = self.client.register_script(redis_scripts.CLAIM)
        self._release = self.client.register_script(redis_scripts.RELEASE)
        self._close = self.client.register_script(redis_scripts.CLOSE)
        self.mirrors = Mirrors()  # the streams this process writes, for its own readers

    async def _do(self, command: Any) -> Any:
        return await reached(command)

    async def create(self, stream_id: str, owner: str | None = None) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(_events_key(stream_id), _tokens_key(stream_id))
        pipe.hset(_meta_key(stream_id), mapping={"owner": owner or "", "state": "open"})
        pipe.expire(_meta_key(stream_id), self.retention)
        pipe.set(_lease_key(stream_id), self.token, px=self._lease_ms)
        await self._do(pipe.execute())
        self.mirrors.start(stream_id)

    async def describe(self, stream_id: str, record: dict[str, Any]) -> None:
        await self._do(self.client.hset(_meta_key(stream_id), "record", json.dumps(record, separators=(",", ":"))))

    async def owner(self, stream_id: str) -> str | None:
        value = await self._do(self.client.hget(_meta_key(stream_id), "owner"))
        if value is None:
            raise UnknownStreamError(stream_id)
        return value.decode() or None

    async def append(self, stream_id: str, event: StreamEvent) -> int:
        return await self._write(stream_id, Step((event,)))

    async def append_step(self, stream_id: str, step: Step) -> None:
        await self._write(stream_id, step)

    async def _write(self, stream_id: str, step: Step) -> int:
        """One script: the lease checked and renewed, the events added, the tokens appended; the
        number of the last event written."""
        tokens = "".join(f"{t}," for t in step.token_ids)
        args: list[Any] = [self.token, self._lease_ms, self.retention, self.max_events, int(step.final), tokens]
        for event in step.events:
            args += [event.name or "", event.data.encode("utf-8", "surrogatepass")]
        try:
            after = await self._do(self._append.call(_keys(stream_id), args))
        except BaseException:
            self.mirrors.stop(stream_id, closed=False)
            raise
        if after < 0:
            self.mirrors.stop(stream_id, closed=False)
            why = "another process holds its lease" if after == -1 else "it is closed"
            raise LeaseLostError(f"stream {stream_id} cannot be written here: {why}")
        self.mirrors.wrote(stream_id, after - 1, step.events)
        return after - 1

    async def close(self, stream_id: str) -> None:
        closed = False
        try:
            closed = bool(await self._do(self._close(keys=_keys(stream_id), args=[self.token, self.retention])))
        finally:
            self.mirrors.stop(stream_id, closed)
        if not closed:
            raise LeaseLostError(f"stream {stream_id} cannot be closed here: another process holds its lease")

    async def renew(self, stream_id: str) -> bool:
        keys = [_lease_key(stream_id), _meta_key(stream_id)]
        held = bool(await self._do(self._renew(keys=keys, args=[self.token, self._lease_ms])))
        if not held:
            self.mirrors.stop(stream_id, closed=False)
        return held

    async def claim(self, stream_id: str) -> bool:
        keys = [_lease_key(stream_id), _meta_key(stream_id)]
        return bool(await self._do(self._claim(keys=keys, args=[self.token, self._lease_ms])))

    async def release(self, stream_id: str) -> None:
        await self._do(self._release(keys=[_lease_key(stream_id)], args=[self.token]))

    async def continuation(self, stream_id: str) -> Continuation:
        pipe = self.client.pipeline(transaction=True)
        pipe.hmget(_meta_key(stream_id), "record", "final")
        pipe.get(_tokens_key(stream_id))
        (record, final), tokens = await self._do(pipe.execute())
        token_ids = tuple(int(t) for t in tokens.decode().split(",") if t) if tokens else ()
        return Continuation(json.loads(record) if record else None, token_ids, final == b"1")

    async def exists(self, stream_id: str) -> bool:
        return bool(await self._do(self.client.exists(_meta_key(stream_id))))

    async def is_closed(self, stream_id: str) -> bool:
        state = await self._do(self.client.hget(_meta_key(stream_id), "state"))
        if state is None:
            raise UnknownStreamError(stream_id)
        return state == b"closed"

    async def last_seq(self, stream_id: str) -> int:
        for entry_id, _ in await self._do(self.client.xrevrange(_events_key(stream_id), count=2)):
            seq = _seq(entry_id)
            if seq is not None:
                return seq
        return -1

    async def follow(self, stream_id: str, after: int) -> AsyncIterator[NumberedEvent]:
        """Events with number > `after`, then new ones as they are written, until the stream closes."""
        mirror = self.mirrors.get(stream_id)
        if mirror is not None:
            async for numbered in mirror.follow(after):
                after = numbered.seq
                yield numbered
            if mirror.closed:
                return
        if not await self.exists(stream_id):
            raise UnknownStreamError(stream_id)
        key, last = _events_key(stream_id), _entry_id(after) if after >= 0 else "0-0"
        while True:
            found = await self._do(self.client.xread({key: last}, count=256, block=self.block_ms))
            for _, entries in found:
                for entry_id, fields in entries:
                    seq = _seq(entry_id)
                    if seq is None:
                        return
                    last = entry_id
                    name = fields.get(b"e")
                    event = StreamEvent(name.decode() if name else None, fields[b"d"].decode("utf-8", "surrogatepass"))
                    yield NumberedEvent(seq, event)
            if not found and not await self.exists(stream_id):  # expired while we waited
                return
