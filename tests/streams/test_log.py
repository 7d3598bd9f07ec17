"""`streams/log.py`: numbered events, replay-then-follow, expiry after retention and eviction by size."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from streamchat.streams import log as log_module
from streamchat.streams.log import MemoryStreamLog, NumberedEvent, StreamEvent, UnknownStreamError

TIMEOUT_S = 1.0


def ev(data: str, name: str | None = None) -> StreamEvent:
    return StreamEvent(name, data)


async def collect(log: MemoryStreamLog, stream_id: str, after: int) -> list[NumberedEvent]:
    return [numbered async for numbered in log.follow(stream_id, after)]


def follower(log: MemoryStreamLog, stream_id: str, after: int) -> asyncio.Task[list[NumberedEvent]]:
    """A follower running on its own, bounded so that a follower that never ends fails the test."""
    return asyncio.create_task(asyncio.wait_for(collect(log, stream_id, after), TIMEOUT_S))


async def settle() -> None:
    """Let every ready task run until it blocks again."""
    for _ in range(5):
        await asyncio.sleep(0)


class FakeClock:
    """Stands in for the log module's `time`, so retention is tested without waiting for it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(log_module, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


async def test_events_are_numbered_from_zero_per_stream() -> None:
    """The sequence number is the `n` of the SSE id `<stream>:<n>`, so each stream counts on its own."""
    log = MemoryStreamLog()
    await log.create("a")
    await log.create("b")
    assert await log.last_seq("a") == -1
    assert [await log.append("a", ev(d)) for d in "xyz"] == [0, 1, 2]
    assert await log.append("b", ev("only")) == 0
    assert await log.last_seq("a") == 2
    assert await log.last_seq("b") == 0


async def test_follow_replays_after_the_position_then_goes_live_until_closed() -> None:
    """A resumed reader must get what it missed, then what comes next, and end when the stream does."""
    log = MemoryStreamLog()
    await log.create("s")
    for data in ("e0", "e1", "e2", "e3"):
        await log.append("s", ev(data))
    task = follower(log, "s", after=1)
    await settle()
    assert not task.done()

    await log.append("s", ev("e4", name="note"))
    await log.append("s", ev("e5"))
    await settle()
    assert not task.done()

    await log.close("s")
    got = await task
    assert got == [
        NumberedEvent(2, ev("e2")),
        NumberedEvent(3, ev("e3")),
        NumberedEvent(4, ev("e4", name="note")),
        NumberedEvent(5, ev("e5")),
    ]


async def test_several_followers_each_get_their_own_tail() -> None:
    """Followers at different positions share one stream but never each other's position."""
    log = MemoryStreamLog()
    await log.create("s")
    for i in range(3):
        await log.append("s", ev(f"e{i}"))
    positions = [-1, 0, 2, 5]
    tasks = [follower(log, "s", after) for after in positions]
    await settle()
    for i in range(3, 7):
        await log.append("s", ev(f"e{i}"))
        await settle()
    await log.close("s")
    results = await asyncio.gather(*tasks)
    for after, got in zip(positions, results, strict=True):
        assert [n.seq for n in got] == list(range(after + 1, 7))
        assert [n.event.data for n in got] == [f"e{i}" for i in range(after + 1, 7)]


async def test_follow_on_a_closed_stream_replays_and_ends() -> None:
    """A reader arriving after the end must not wait for events that will never come."""
    log = MemoryStreamLog()
    await log.create("s")
    await log.append("s", ev("e0"))
    await log.append("s", ev("e1"))
    await log.close("s")
    assert await asyncio.wait_for(collect(log, "s", -1), TIMEOUT_S) == [
        NumberedEvent(0, ev("e0")),
        NumberedEvent(1, ev("e1")),
    ]
    assert await asyncio.wait_for(collect(log, "s", 1), TIMEOUT_S) == []


async def test_close_wakes_a_follower_waiting_with_nothing_to_read() -> None:
    log = MemoryStreamLog()
    await log.create("s")
    task = follower(log, "s", after=-1)
    await settle()
    assert not task.done()
    assert not await log.is_closed("s")
    await log.close("s")
    await log.close("s")
    assert await log.is_closed("s")
    assert await task == []


async def test_a_closed_stream_is_forgotten_after_retention(clock: FakeClock) -> None:
    """Finished streams are kept only long enough to resume them, then their memory is returned."""
    log = MemoryStreamLog(retention=60.0)
    await log.create("done")
    await log.append("done", ev("x"))
    await log.close("done")

    clock.now += 59.0
    assert await log.exists("done")
    assert await log.last_seq("done") == 0

    clock.now += 2.0
    assert not await log.exists("done")
    with pytest.raises(UnknownStreamError):
        await log.last_seq("done")


async def test_creating_a_stream_also_sweeps_expired_ones(clock: FakeClock) -> None:
    log = MemoryStreamLog(retention=10.0)
    await log.create("old")
    await log.close("old")
    clock.now += 11.0
    await log.create("new")
    with pytest.raises(UnknownStreamError):
        await log.is_closed("old")
    assert not await log.is_closed("new")


async def test_a_live_stream_never_expires(clock: FakeClock) -> None:
    """Retention counts from the end of a stream; a long generation must not lose its log mid-way."""
    log = MemoryStreamLog(retention=1.0)
    await log.create("live")
    await log.append("live", ev("x"))
    clock.now += 10_000.0
    assert await log.exists("live")
    await log.close("live")
    clock.now += 0.5
    assert await log.exists("live")
    clock.now += 1.0
    assert not await log.exists("live")


async def test_retention_zero_expires_on_the_real_clock() -> None:
    log = MemoryStreamLog(retention=0.0)
    await log.create("s")
    await log.close("s")
    await asyncio.sleep(0.01)
    assert not await log.exists("s")


EVENT_DATA = "x" * 18  # accounted as 18 bytes + 32 bytes of overhead = 50 bytes


async def _stream(log: MemoryStreamLog, stream_id: str, events: int, closed: bool) -> None:
    await log.create(stream_id)
    for _ in range(events):
        await log.append(stream_id, ev(EVENT_DATA))
    if closed:
        await log.close(stream_id)


async def test_over_max_bytes_the_oldest_finished_streams_go_first_and_live_ones_stay() -> None:
    """Memory is bounded, but evicting a live stream would cut off readers mid-answer."""
    log = MemoryStreamLog(max_bytes=300)
    await _stream(log, "live-early", 1, closed=False)  # 50
    await _stream(log, "done-1", 2, closed=True)  # 150
    await _stream(log, "done-2", 2, closed=True)  # 250
    await _stream(log, "live-late", 1, closed=False)  # 300: at the limit, nothing goes
    assert [await log.exists(s) for s in ("live-early", "done-1", "done-2", "live-late")] == [True] * 4

    await log.append("live-late", ev(EVENT_DATA))  # 350 -> drop done-1 -> 250
    assert not await log.exists("done-1")
    assert await log.exists("done-2")

    await log.append("live-early", ev(EVENT_DATA))  # 300
    assert await log.exists("done-2")
    await log.append("live-early", ev(EVENT_DATA))  # 350 -> drop done-2 -> 250
    assert not await log.exists("done-2")

    for _ in range(6):
        await log.append("live-late", ev(EVENT_DATA))  # far over the limit with only live streams left
    assert await log.exists("live-early") and await log.exists("live-late")
    assert await log.last_seq("live-late") == 7
    await log.close("live-early")
    assert [n.seq for n in await collect(log, "live-early", -1)] == [0, 1, 2]


async def test_eviction_stops_once_under_the_limit() -> None:
    """Only as many finished streams go as needed; the rest stay resumable."""
    log = MemoryStreamLog(max_bytes=200)
    for sid in ("d1", "d2", "d3"):
        await _stream(log, sid, 1, closed=True)  # 150 in all
    await _stream(log, "live", 2, closed=False)  # 250 -> drop d1 -> 200
    assert [await log.exists(s) for s in ("d1", "d2", "d3", "live")] == [False, True, True, True]


async def test_sizes_are_counted_in_utf8_bytes() -> None:
    """The budget is memory, so a CJK answer weighs three bytes a character, not one."""
    log = MemoryStreamLog(max_bytes=100)
    await log.create("done")
    await log.append("done", ev("y" * 16))  # 48
    await log.close("done")
    await log.create("live")
    await log.append("live", ev("你" * 10))  # 30 bytes + 32 = 62, though only 42 counting characters
    assert not await log.exists("done")
    assert await log.exists("live")


async def test_unknown_streams_raise_unknown_stream_error() -> None:
    """The resume endpoint turns this into a 404, so every accessor must raise it, not return junk."""
    log = MemoryStreamLog()
    assert not await log.exists("nope")
    with pytest.raises(UnknownStreamError):
        await log.append("nope", ev("x"))
    with pytest.raises(UnknownStreamError):
        await log.is_closed("nope")
    with pytest.raises(UnknownStreamError):
        await log.last_seq("nope")
    with pytest.raises(UnknownStreamError):
        await anext(log.follow("nope", -1))
    await log.close("nope")
    assert issubclass(UnknownStreamError, KeyError)
