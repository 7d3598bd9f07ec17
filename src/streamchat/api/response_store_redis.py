"""Stored responses in Redis (`--stream-store redis://…`): every process on it sees every response.

- `sc:r:<id>`: the response as JSON (owner, object, conversation, stream id), expiring `ttl`
  seconds after its creation; a save keeps that expiry and never re-creates a response deleted or
  expired meanwhile (`SET … XX KEEPTTL`).
- `sc:ri`: the ids by creation time (a sorted set). A put drops the ids older than the ttl and
  trims the set to `size`, deleting the responses it evicts, in one script.
- `sc:rc:<id>`: a request to cancel. The process running a response keeps its live object and
  looks for the requests of its runs every `poll` seconds (one `MGET`, only while it runs some),
  so a cancel sent to any process stops the answer where it runs.

On the process running a response, a read returns the live object (fresher than its last write)
once Redis says it is still stored and the caller's. Redis unreachable raises
`StreamStoreUnavailableError`, which the routes answer with a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis.asyncio as redis

from streamchat.api.response_store import LiveRuns, StoredResponse
from streamchat.streams.redis_log import UNREACHABLE, reached

log = logging.getLogger(__name__)

INDEX_KEY = "sc:ri"
_PREFIX = "sc:r:"
CANCEL_TTL_S = 60  # a cancel request for a run no process has (its process died) does not linger

# KEYS: the response, the index. ARGV: the JSON, ttl (ms), score (ms), id, size, key prefix, cutoff (ms)
_PUT = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[7])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
if over > 0 then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[2], 0, over - 1)) do
    redis.call('DEL', ARGV[6] .. old)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return over
"""


def response_key(response_id: str) -> str:
    return f"{_PREFIX}{response_id}"


def cancel_key(response_id: str) -> str:
    return f"sc:rc:{response_id}"


def _encode(item: StoredResponse) -> bytes:
    data = {"owner": item.owner, "body": item.body, "conversation": item.conversation, "stream_id": item.stream_id}
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")


class RedisResponseStore:
    def __init__(self, client: redis.Redis, size: int, ttl: float, poll: float = 0.2) -> None:
        self.client = client
        self._size, self._ttl_ms = size, max(1, int(ttl * 1000))
        self._poll_s = poll
        self._put = client.register_script(_PUT)
        self._live = LiveRuns()
        self._poller: asyncio.Task | None = None

    async def _do(self, command: Any) -> Any:
        return await reached(command, "response store")

    async def put(self, item: StoredResponse) -> None:
        now = int(time.time() * 1000)
        args = [_encode(item), self._ttl_ms, now, item.id, self._size, _PREFIX, now - self._ttl_ms]
        await self._do(self._put(keys=[response_key(item.id), INDEX_KEY], args=args))

    async def get(self, response_id: str, owner: str | None) -> StoredResponse | None:
        raw = await self._do(self.client.get(response_key(response_id)))
        if raw is None:
            return None
        data = json.loads(raw.decode("utf-8", "surrogatepass"))
        if data["owner"] != owner:
            return None
        live = self._live.get(response_id)
        if live is not None:
            return live
        return StoredResponse(response_id, owner, data["body"], data["conversation"], data["stream_id"])

    async def delete(self, response_id: str, owner: str | None) -> StoredResponse | None:
        item = await self.get(response_id, owner)
        if item is not None:
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(response_key(response_id))
            pipe.zrem(INDEX_KEY, response_id)
            await self._do(pipe.execute())
        return item

    async def save(self, item: StoredResponse) -> None:
        await self._do(self.client.set(response_key(item.id), _encode(item), xx=True, keepttl=True))

    @contextmanager
    def running(self, item: StoredResponse, abort: Callable[[], None]) -> Iterator[None]:
        with self._live.running(item, abort):
            if self._poller is None or self._poller.done():
                self._poller = asyncio.create_task(self._poll(), name="response-cancels")
            yield

    async def cancel(self, item: StoredResponse) -> None:
        if not self._live.abort(item.id):  # it runs in another process: leave it the request
            await self._do(self.client.set(cancel_key(item.id), b"1", ex=CANCEL_TTL_S))

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller

    async def _poll(self) -> None:
        """While this process runs responses: abort those another process was asked to cancel."""
        while ids := self._live.ids():
            try:
                flags = await self.client.mget([cancel_key(i) for i in ids])
                asked = [i for i, flag in zip(ids, flags, strict=True) if flag is not None]
                if asked:
                    await self.client.delete(*(cancel_key(i) for i in asked))
            except UNREACHABLE as exc:
                log.warning("cannot read cancel requests: %s", exc)
                asked = []
            for response_id in asked:
                self._live.abort(response_id)
            await asyncio.sleep(self._poll_s)
