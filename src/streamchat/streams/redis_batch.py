"""Script calls that arrive in the same turn of the event loop go to Redis as one pipeline.

Every engine step wakes the producer of each stream in it, and each writes its step with one Lua
script call. Sent one by one, 64 streams cost 64 round trips, 64 connection checkouts and 64
reply parses on the event loop, which shares the cores with the engine. Gathered, they are one
write and one read on one connection. Order within a stream holds (a producer awaits its write
before the next), and a call's result or error goes back to its own caller.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError


class ScriptBatcher:
    def __init__(self, client: Redis, script: AsyncScript) -> None:
        self.client = client
        self.script = script
        self._pending: list[tuple[list[str], list[Any], asyncio.Future[Any]]] = []
        self._flushing: set[asyncio.Task[None]] = set()  # held so that a flush is not collected mid-way

    async def call(self, keys: list[str], args: list[Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._start_flush)  # after the other producers woken with this one
        self._pending.append((keys, args, future))
        return await future

    def _start_flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._flush(batch))
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _flush(self, batch: list[tuple[list[str], list[Any], asyncio.Future[Any]]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for keys, args, _ in batch:  # by hash: the script is loaded once (and again after a Redis restart)
            pipe.evalsha(self.script.sha, len(keys), *keys, *args)
        try:
            results = await pipe.execute(raise_on_error=False)
            for i, (keys, args, _) in enumerate(batch):
                if isinstance(results[i], NoScriptError):
                    results[i] = await self.script(keys=keys, args=args)  # loads it
        except BaseException as exc:  # the connection failed: every caller learns it
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for (*_, future), result in zip(batch, results, strict=True):
            if not future.done():
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
