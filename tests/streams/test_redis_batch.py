"""`streams/redis_batch.py` against a real redis-server: one pipeline per loop turn, each caller its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from streamchat.streams.log import Step, StreamEvent
from streamchat.streams.redis_log import RedisStreamLog
from streamchat.streams.takeover import LeaseLostError


@pytest.fixture
async def log(redis_url: str) -> AsyncIterator[RedisStreamLog]:
    store = RedisStreamLog(redis_url, retention=60, block_ms=200, lease=0.3)
    yield store
    await store.client.aclose()


async def test_writes_of_many_streams_in_one_turn_go_in_one_pipeline_each_in_order(log: RedisStreamLog) -> None:
    streams = [f"batch{i}" for i in range(20)]
    for sid in streams:
        await log.create(sid)
    pipelines = 0
    made = log.client.pipeline

    def counted(*args, **kw):
        nonlocal pipelines
        pipelines += 1
        return made(*args, **kw)

    log.client.pipeline = counted  # type: ignore[method-assign]

    async def produce(sid: str) -> None:
        for n in range(5):
            await log.append_step(sid, Step((StreamEvent(None, f"{sid} {n} 中文"),), (n,)))

    await asyncio.gather(*(produce(sid) for sid in streams))
    log.client.pipeline = made  # type: ignore[method-assign]
    assert pipelines <= 10, f"{pipelines} pipelines for 100 writes of 20 streams writing together"
    for sid in streams:
        assert await log.last_seq(sid) == 4
        events = [(await log.client.xrange(f"sc:s:{sid}"))[n][1][b"d"].decode() for n in range(5)]
        assert events == [f"{sid} {n} 中文" for n in range(5)]


async def test_a_lost_lease_fails_only_its_own_write_in_a_batch(log: RedisStreamLog, redis_url: str) -> None:
    other = RedisStreamLog(redis_url, retention=60, block_ms=200, lease=0.3)
    try:
        await log.create("kept")
        await log.create("lost")
        await asyncio.sleep(0.4)  # both leases run out; another process takes one
        assert await other.claim("lost")
        results = await asyncio.gather(
            log.append("kept", StreamEvent(None, "mine")),
            log.append("lost", StreamEvent(None, "not mine any more")),
            return_exceptions=True,
        )
        assert results[0] == 0 and isinstance(results[1], LeaseLostError)
    finally:
        await other.client.aclose()


async def test_writes_go_on_after_redis_forgot_the_script(log: RedisStreamLog) -> None:
    await log.create("flushed")
    await log.append("flushed", StreamEvent(None, "before"))
    await log.client.script_flush()  # as after a Redis restart
    assert await log.append("flushed", StreamEvent(None, "after")) == 1
