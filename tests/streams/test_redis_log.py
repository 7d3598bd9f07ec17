"""`streams/redis_log.py` against a real redis-server: the memory log's behaviour, shared by processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from streamchat.streams.log import NumberedEvent, Step, StreamEvent, StreamStoreUnavailableError, UnknownStreamError
from streamchat.streams.redis_log import RedisStreamLog
from streamchat.streams.takeover import Continuation, LeaseLostError
from tests.redis_server import free_port

TIMEOUT_S = 5.0


@pytest.fixture
async def log(redis_url: str) -> AsyncIterator[RedisStreamLog]:
    store = RedisStreamLog(redis_url, retention=60, block_ms=200)
    yield store
    await store.client.aclose()


@pytest.fixture
async def two_processes(redis_url: str) -> AsyncIterator[tuple[RedisStreamLog, RedisStreamLog]]:
    """Two processes' logs on one Redis, with leases short enough to run out within a test."""
    first = RedisStreamLog(redis_url, retention=60, block_ms=200, lease=0.3)
    other = RedisStreamLog(redis_url, retention=60, block_ms=200, lease=0.3)
    yield first, other
    await first.client.aclose()
    await other.client.aclose()


async def collect(log: RedisStreamLog, stream_id: str, after: int) -> list[NumberedEvent]:
    return await asyncio.wait_for(_all(log, stream_id, after), TIMEOUT_S)


async def _all(log: RedisStreamLog, stream_id: str, after: int) -> list[NumberedEvent]:
    return [numbered async for numbered in log.follow(stream_id, after)]


async def test_events_are_numbered_from_zero_and_replayed_after_a_position(log: RedisStreamLog) -> None:
    await log.create("a", owner="k1")
    assert [await log.append("a", StreamEvent(None, f"e{i}")) for i in range(3)] == [0, 1, 2]
    assert await log.owner("a") == "k1" and await log.last_seq("a") == 2 and not await log.is_closed("a")
    await log.close("a")
    assert [(n.seq, n.event.data) for n in await collect(log, "a", 0)] == [(1, "e1"), (2, "e2")]
    assert [n.seq for n in await collect(log, "a", -1)] == [0, 1, 2]
    assert await log.is_closed("a") and await log.last_seq("a") == 2


async def test_a_follower_goes_live_and_ends_when_the_stream_closes(log: RedisStreamLog) -> None:
    await log.create("b")
    await log.append("b", StreamEvent("message", "first"))
    follower = asyncio.create_task(collect(log, "b", -1))
    await asyncio.sleep(0.3)
    await log.append("b", StreamEvent(None, "中文 and 😀"))
    await log.close("b")
    got = await follower
    assert [(n.seq, n.event.name, n.event.data) for n in got] == [(0, "message", "first"), (1, None, "中文 and 😀")]
    assert await log.owner("b") is None


async def xreads(log: RedisStreamLog) -> int:
    return (await log.client.info("commandstats")).get("cmdstat_xread", {}).get("calls", 0)


async def test_readers_in_the_producing_process_follow_without_reading_redis(redis_url: str) -> None:
    producer = RedisStreamLog(redis_url, retention=60, block_ms=200)
    elsewhere = RedisStreamLog(redis_url, retention=60, block_ms=200)
    try:
        await producer.create("m")
        await producer.append("m", StreamEvent(None, "zero"))
        before = await xreads(producer)
        local = asyncio.create_task(collect(producer, "m", -1))
        late = asyncio.create_task(collect(producer, "m", 0))  # a resumption, in the same process
        remote = asyncio.create_task(collect(elsewhere, "m", -1))
        for i in range(1, 20):
            await producer.append_step("m", Step((StreamEvent("x" if i % 2 else None, f"e{i} 中文"),), (i,)))
            await asyncio.sleep(0.005)
        await producer.close("m")
        everything = [(n.seq, n.event) for n in await remote]
        assert len(everything) == 20
        assert [(n.seq, n.event) for n in await local] == everything
        assert [(n.seq, n.event) for n in await late] == everything[1:]
        assert await xreads(producer) - before >= 1  # the other process's reader
        local_only = await xreads(producer)
        await producer.create("n")
        reader = asyncio.create_task(collect(producer, "n", -1))
        for i in range(10):
            await producer.append("n", StreamEvent(None, str(i)))
        await producer.close("n")
        assert [n.event.data for n in await reader] == [str(i) for i in range(10)]
        assert await xreads(producer) == local_only, "a local reader asked Redis"
        assert len(producer.mirrors) == 0, "closed streams are not kept in memory"
    finally:
        await producer.client.aclose()
        await elsewhere.client.aclose()


async def test_a_local_reader_goes_on_from_redis_when_another_process_takes_the_stream(
    two_processes: tuple[RedisStreamLog, RedisStreamLog],
) -> None:
    first, other = two_processes
    await first.create("o")
    await first.append("o", StreamEvent(None, "a"))
    reader = asyncio.create_task(collect(first, "o", -1))
    await asyncio.sleep(0.5)  # the first process stalls past its lease
    assert await other.claim("o")
    await other.append("o", StreamEvent(None, "b"))
    assert not await first.renew("o")  # what its lease keeper finds next
    await other.append("o", StreamEvent(None, "c"))
    await other.close("o")
    assert [(n.seq, n.event.data) for n in await reader] == [(0, "a"), (1, "b"), (2, "c")]


async def test_another_process_takes_over_once_the_lease_expires(
    two_processes: tuple[RedisStreamLog, RedisStreamLog],
) -> None:
    first, other = two_processes
    await first.create("c")
    await first.append("c", StreamEvent(None, "from the first process"))
    assert await other.exists("c") and await other.last_seq("c") == 0
    assert not await other.claim("c"), "the lease of a live producer is not for taking"
    with pytest.raises(LeaseLostError):
        await other.append("c", StreamEvent(None, "not mine to write"))
    await asyncio.sleep(0.5)  # the first process stopped renewing
    assert await other.claim("c")
    assert await other.append("c", StreamEvent(None, "taken over")) == 1
    with pytest.raises(LeaseLostError):  # the first process came back to life: fenced off
        await first.append("c", StreamEvent(None, "too late"))
    assert not await first.renew("c") and await other.renew("c")
    await other.close("c")
    assert [n.event.data for n in await collect(first, "c", -1)] == ["from the first process", "taken over"]
    assert not await first.claim("c"), "a closed stream is not taken over"


async def test_exactly_one_of_several_processes_wins_the_claim(redis_url: str) -> None:
    logs = [RedisStreamLog(redis_url, retention=60, block_ms=200, lease=0.2) for _ in range(6)]
    try:
        await logs[0].create("race")
        await asyncio.sleep(0.3)
        wins = await asyncio.gather(*(log.claim("race") for log in logs[1:]))
        assert sorted(wins) == [False] * 4 + [True]
    finally:
        for log in logs:
            await log.client.aclose()


async def test_steps_keep_the_tokens_behind_their_events(log: RedisStreamLog) -> None:
    await log.create("t")
    await log.describe("t", {"protocol": "openai.chat", "prompt": [1, 2]})
    await log.append_step("t", Step((StreamEvent(None, "a"), StreamEvent("x", "b")), (5, 6)))
    await log.append_step("t", Step((), (7,)))  # held text: tokens, no event
    first = await log.continuation("t")
    assert first == Continuation({"protocol": "openai.chat", "prompt": [1, 2]}, (5, 6, 7), final=False)
    await log.append_step("t", Step((StreamEvent(None, "c"),), (8,), final=True))
    assert (await log.continuation("t")).final and await log.last_seq("t") == 2
    assert [(n.seq, n.event) for n in (await collect_until(log, "t", 3))] == [
        (0, StreamEvent(None, "a")),
        (1, StreamEvent("x", "b")),
        (2, StreamEvent(None, "c")),
    ]


async def collect_until(log: RedisStreamLog, stream_id: str, count: int) -> list[NumberedEvent]:
    got: list[NumberedEvent] = []
    async for numbered in log.follow(stream_id, -1):
        got.append(numbered)
        if len(got) == count:
            break
    return got


async def test_unknown_streams_and_expiry(redis_url: str) -> None:
    short = RedisStreamLog(redis_url, retention=1, block_ms=200)
    try:
        with pytest.raises(UnknownStreamError):
            await short.owner("never")
        with pytest.raises(UnknownStreamError):
            await collect(short, "never", -1)
        await short.create("d")
        await short.close("d")
        assert await short.exists("d")
        await asyncio.sleep(2.2)
        assert not await short.exists("d")
    finally:
        await short.client.aclose()


async def test_an_unreachable_store_says_so(tmp_path: Path) -> None:
    down = RedisStreamLog(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(StreamStoreUnavailableError):
            await down.create("e")
    finally:
        await down.client.aclose()
