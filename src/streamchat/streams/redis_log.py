"""The stream log on Redis (`--stream-store redis://host:port/db`): every process sees every stream.

One Redis stream per answer, `sc:s:<id>`, its entries numbered by their ids: event n is entry
`0-(n+1)`, so an event's place survives any process and a reader resumes with one `XRANGE`.
Closing adds a sentinel entry `1-0`, greater than every event id, so a blocked `XREAD` wakes up
and knows the stream has ended. Beside it a hash `sc:m:<id>` holds the owner and the state.
Both keys expire `retention` seconds after the last write; a live stream refreshes them as it
writes. Streams are capped at `max_events` entries (oldest trimmed), like the memory log's bound.

Redis being unreachable raises `StreamStoreUnavailableError`: new streams are refused with a 503 and
readers of live ones get an error event; the client reconnects by itself once Redis is back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import redis.asyncio as redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streamchat.streams.log import NumberedEvent, StreamEvent, StreamStoreUnavailableError, UnknownStreamError

_CLOSED_ID = "1-0"
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)


def _events_key(stream_id: str) -> str:
    return f"sc:s:{stream_id}"


def _meta_key(stream_id: str) -> str:
    return f"sc:m:{stream_id}"


def _entry_id(seq: int) -> str:
    return f"0-{seq + 1}"


def _seq(entry_id: bytes | str) -> int | None:
    """The event number of an entry id; None for the closing sentinel."""
    ms, _, n = (entry_id.decode() if isinstance(entry_id, bytes) else entry_id).partition("-")
    return int(n) - 1 if ms == "0" else None


class RedisStreamLog:
    def __init__(self, url: str, retention: float = 600.0, max_events: int = 100_000, block_ms: int = 2000) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=10)
        self.retention = max(1, int(retention))
        self.max_events = max_events
        self.block_ms = block_ms
        self._next: dict[str, int] = {}  # the next event number of streams this process writes

    async def _do(self, command: Any) -> Any:
        try:
            return await command
        except _UNREACHABLE as exc:
            raise StreamStoreUnavailableError(f"the stream store cannot be reached: {exc}") from exc

    async def create(self, stream_id: str, owner: str | None = None) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(_events_key(stream_id))
        pipe.hset(_meta_key(stream_id), mapping={"owner": owner or "", "state": "open"})
        pipe.expire(_meta_key(stream_id), self.retention)
        await self._do(pipe.execute())
        self._next[stream_id] = 0

    async def owner(self, stream_id: str) -> str | None:
        value = await self._do(self.client.hget(_meta_key(stream_id), "owner"))
        if value is None:
            raise UnknownStreamError(stream_id)
        return value.decode() or None

    async def append(self, stream_id: str, event: StreamEvent) -> int:
        seq = self._next.get(stream_id)
        if seq is None:  # a stream this process did not start (taken over): continue its numbering
            seq = await self.last_seq(stream_id) + 1
        fields = {"d": event.data.encode("utf-8", "surrogatepass")}
        if event.name is not None:
            fields["e"] = event.name.encode()
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(_events_key(stream_id), fields, id=_entry_id(seq), maxlen=self.max_events, approximate=True)
        pipe.expire(_events_key(stream_id), self.retention)
        pipe.expire(_meta_key(stream_id), self.retention)
        await self._do(pipe.execute())
        self._next[stream_id] = seq + 1
        return seq

    async def close(self, stream_id: str) -> None:
        self._next.pop(stream_id, None)
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(_meta_key(stream_id), "state", "closed")
        pipe.xadd(_events_key(stream_id), {"closed": b"1"}, id=_CLOSED_ID)
        pipe.expire(_events_key(stream_id), self.retention)
        pipe.expire(_meta_key(stream_id), self.retention)
        await self._do(pipe.execute())

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
