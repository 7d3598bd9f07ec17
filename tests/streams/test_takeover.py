"""`streams/takeover.py` with the manager, on a real redis-server: when a reader's process takes a
stream over, when it waits, and how a producer that lost its lease keeps out of the log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from streamchat.streams.log import Step, StreamEvent
from streamchat.streams.manager import DONE_EVENT, StreamManager
from streamchat.streams.redis_log import RedisStreamLog
from streamchat.streams.takeover import Adoption, Continuation, NotNowError

LEASE_S = 0.2
TIMEOUT_S = 10.0


@pytest.fixture
async def logs(redis_url: str) -> AsyncIterator[list[RedisStreamLog]]:
    """Two processes' views of one Redis."""
    made = [RedisStreamLog(redis_url, retention=60, block_ms=100, lease=LEASE_S) for _ in range(2)]
    yield made
    for log in made:
        await log.client.aclose()


async def _events(*items: StreamEvent | Step) -> AsyncIterator[StreamEvent | Step]:
    for item in items:
        yield item


async def read_all(manager: StreamManager, stream_id: str, after: int = -1) -> list[tuple[str | None, str]]:
    async def collect() -> list[tuple[str | None, str]]:
        out = []
        async for frame in manager.read(stream_id, after, resumed=True):
            lines = frame.decode().splitlines()
            name = next((line[7:] for line in lines if line.startswith("event: ")), None)
            out.append((name, "".join(line[6:] for line in lines if line.startswith("data: "))))
        return out

    return await asyncio.wait_for(collect(), TIMEOUT_S)


async def dead_producer(log: RedisStreamLog, stream_id: str, record: dict | None) -> None:
    """What a process killed mid-answer leaves: an open stream, a lease nobody renews."""
    await log.create(stream_id)
    if record is not None:
        await log.describe(stream_id, record)
    await log.append_step(stream_id, Step((StreamEvent(None, "one"), StreamEvent(None, "two")), (11, 12)))
    await log.append_step(stream_id, Step((), (13,)))


async def test_a_stream_whose_producer_died_is_continued_from_its_tokens(logs: list[RedisStreamLog]) -> None:
    await dead_producer(logs[0], "s1", {"protocol": "p"})
    seen: list[Continuation] = []

    async def continuer(stream_id: str, continuation: Continuation) -> Adoption:
        seen.append(continuation)
        return Adoption(_events(Step((StreamEvent(None, "three"),), (14,), final=True), DONE_EVENT))

    manager = StreamManager(logs[1], continuer=continuer)
    assert await read_all(manager, "s1", after=0) == [(None, "two"), (None, "three"), (None, "[DONE]")]
    assert seen == [Continuation({"protocol": "p"}, (11, 12, 13), final=False)]
    assert manager.counters.taken_over == 1 and await logs[1].is_closed("s1")


async def test_a_stream_that_cannot_be_continued_ends_with_producer_lost(logs: list[RedisStreamLog]) -> None:
    await dead_producer(logs[0], "s2", None)

    async def continuer(stream_id: str, continuation: Continuation) -> None:
        assert continuation.record is None
        return None

    manager = StreamManager(logs[1], continuer=continuer)
    got = await read_all(manager, "s2", after=1)
    assert [name for name, _ in got] == ["error", None] and got[-1][1] == "[DONE]"
    assert json.loads(got[0][1])["error"]["code"] == "producer_lost"
    assert manager.counters.taken_over == 0


async def test_a_process_that_cannot_continue_now_gives_the_lease_back_and_tries_again(
    logs: list[RedisStreamLog],
) -> None:
    await dead_producer(logs[0], "s3", {"protocol": "p"})
    calls = 0

    async def continuer(stream_id: str, continuation: Continuation) -> Adoption:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise NotNowError("the model is still loading")
        return Adoption(_events(DONE_EVENT))

    manager = StreamManager(logs[1], continuer=continuer)
    assert await read_all(manager, "s3", after=1) == [(None, "[DONE]")]
    assert calls == 2


async def test_a_live_producer_keeps_its_stream_and_a_stalled_one_is_fenced_off(logs: list[RedisStreamLog]) -> None:
    first_events: asyncio.Queue[StreamEvent | None] = asyncio.Queue()

    async def produced() -> AsyncIterator[StreamEvent]:
        while (event := await first_events.get()) is not None:
            yield event

    first = StreamManager(logs[0])
    stream_id = await first.start(produced())
    first_events.put_nowait(StreamEvent(None, "first"))
    taken = asyncio.Event()

    async def continuer(stream_id: str, continuation: Continuation) -> Adoption:
        taken.set()
        return Adoption(_events(StreamEvent(None, "second"), DONE_EVENT))

    second = StreamManager(logs[1], continuer=continuer)
    reader = asyncio.create_task(read_all(second, stream_id))
    await asyncio.sleep(LEASE_S * 3)
    assert not taken.is_set(), "a producer that renews its lease keeps its stream"
    first._live[stream_id].keeper.cancel()  # the first process stalls: no renewal, and it writes too late
    await asyncio.wait_for(taken.wait(), TIMEOUT_S)
    first_events.put_nowait(StreamEvent(None, "too late"))
    assert await reader == [(None, "first"), (None, "second"), (None, "[DONE]")]
    await asyncio.wait_for(_gone(first, stream_id), TIMEOUT_S)


async def _gone(manager: StreamManager, stream_id: str) -> None:
    while manager.live_count:
        await asyncio.sleep(0.01)
