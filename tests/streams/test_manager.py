"""`streams/manager.py`: producers outliving readers, grace-period reaping, cancel, shutdown and event ids."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict

import pytest

from streamchat.sse.framing import encode_event
from streamchat.streams.log import MemoryStreamLog, StreamEvent, UnknownStreamError
from streamchat.streams.manager import DONE_EVENT, BadEventIdError, StreamManager, parse_event_id

TIMEOUT_S = 1.0
DONE_DATA = b"data: [DONE]\n\n"

MakeManager = Callable[..., tuple[StreamManager, MemoryStreamLog]]


class Producer:
    """An event source the test drives by hand, which records how it was ended."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[StreamEvent | BaseException | None] = asyncio.Queue()
        self.ended = asyncio.Event()
        self.ended_by: type[BaseException] | None = None

    def send(self, data: str, name: str | None = None) -> None:
        self.queue.put_nowait(StreamEvent(name, data))

    def fail(self, exc: BaseException) -> None:
        self.queue.put_nowait(exc)

    def finish(self) -> None:
        self.queue.put_nowait(None)

    async def events(self) -> AsyncIterator[StreamEvent]:
        try:
            while (item := await self.queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        except (asyncio.CancelledError, GeneratorExit) as exc:
            self.ended_by = type(exc)
            raise
        finally:
            self.ended.set()

    async def wait_ended(self) -> None:
        await asyncio.wait_for(self.ended.wait(), TIMEOUT_S)


def frame(stream_id: str, seq: int, data: str, name: str | None = None) -> bytes:
    return encode_event(data, event=name, id=f"{stream_id}:{seq}")


async def read_all(manager: StreamManager, stream_id: str, after: int = -1, resumed: bool = False) -> list[bytes]:
    async def collect() -> list[bytes]:
        return [chunk async for chunk in manager.read(stream_id, after, resumed)]

    return await asyncio.wait_for(collect(), TIMEOUT_S)


async def read_some(manager: StreamManager, stream_id: str, count: int, after: int = -1) -> list[bytes]:
    """Read `count` frames, then leave as a dropped connection does."""
    reader = manager.read(stream_id, after)
    try:
        return [await asyncio.wait_for(anext(reader), TIMEOUT_S) for _ in range(count)]
    finally:
        await reader.aclose()


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    async def poll() -> None:
        while not await condition():
            await asyncio.sleep(0.001)

    await asyncio.wait_for(poll(), TIMEOUT_S)


def error_body(chunk: bytes) -> dict:
    lines = chunk.decode().splitlines()
    assert lines[1] == "event: error"
    return json.loads(lines[2].removeprefix("data: "))["error"]


@pytest.fixture
async def make_manager() -> AsyncIterator[MakeManager]:
    """Managers over a fresh in-memory log; whatever a test leaves running is shut down afterwards."""
    made: list[StreamManager] = []

    def make(grace: float = 10.0) -> tuple[StreamManager, MemoryStreamLog]:
        log = MemoryStreamLog()
        manager = StreamManager(log, grace=grace)
        made.append(manager)
        return manager, log

    yield make
    for manager in made:
        await asyncio.wait_for(manager.shutdown(), TIMEOUT_S)


async def test_read_yields_framed_events_in_order(make_manager: MakeManager) -> None:
    """Each frame carries the id `<stream>:<n>` that a reconnecting client sends back as Last-Event-ID."""
    manager, _ = make_manager()
    producer = Producer()
    sid = await manager.start(producer.events())
    producer.send("hello")
    producer.send('{"x": 1}', name="note")
    producer.send("two\nlines")
    producer.finish()
    assert await read_all(manager, sid) == [
        f"id: {sid}:0\ndata: hello\n\n".encode(),
        f'id: {sid}:1\nevent: note\ndata: {{"x": 1}}\n\n'.encode(),
        f"id: {sid}:2\ndata: two\ndata: lines\n\n".encode(),
    ]
    await producer.wait_ended()
    assert producer.ended_by is None
    assert await manager.finished(sid)
    assert manager.live_count == 0
    assert manager.counters.started == 1
    assert manager.counters.disconnects == 0


async def test_a_dropped_resumable_stream_keeps_producing_and_resumes_exactly_after_the_last_id(
    make_manager: MakeManager,
) -> None:
    """A reconnect within grace must lose nothing and repeat nothing, and must stop the reaper."""
    grace = 0.2
    manager, log = make_manager(grace=grace)
    producer = Producer()
    sid = await manager.start(producer.events())
    for data in ("e0", "e1", "e2"):
        producer.send(data)
    assert await read_some(manager, sid, 2) == [frame(sid, 0, "e0"), frame(sid, 1, "e1")]
    assert manager.counters.disconnects == 1

    producer.send("e3")
    await until(lambda: _last_seq_is(log, sid, 3))
    assert manager.live_count == 1
    assert not producer.ended.is_set()

    resumed = asyncio.create_task(read_all(manager, sid, after=1, resumed=True))
    await asyncio.sleep(grace * 1.5)
    assert not producer.ended.is_set(), "a resumed stream was reaped by the first disconnect's timer"
    producer.send("e4")
    producer.finish()
    assert await resumed == [frame(sid, 2, "e2"), frame(sid, 3, "e3"), frame(sid, 4, "e4")]
    await producer.wait_ended()
    assert producer.ended_by is None
    assert manager.counters.resumed == 1
    assert manager.counters.abandoned == 0
    assert manager.counters.disconnects == 1


async def test_grace_counts_from_the_last_reader_leaving(make_manager: MakeManager) -> None:
    """A client that drops twice gets a full grace period after the second drop, not what is left of the first."""
    grace = 0.2
    manager, log = make_manager(grace=grace)
    producer = Producer()
    sid = await manager.start(producer.events())
    producer.send("e0")
    producer.send("e1")
    await read_some(manager, sid, 1)
    await asyncio.sleep(grace * 0.6)
    await read_some(manager, sid, 1, after=0)
    await asyncio.sleep(grace * 0.6)
    assert not producer.ended.is_set(), "the first drop's reaper fired after the client had come back"
    assert manager.counters.abandoned == 0

    producer.finish()
    assert await read_all(manager, sid, after=1, resumed=True) == []
    assert manager.counters.disconnects == 2
    await producer.wait_ended()
    assert producer.ended_by is None


async def _last_seq_is(log: MemoryStreamLog, stream_id: str, seq: int) -> bool:
    return await log.last_seq(stream_id) == seq


async def test_nobody_resuming_within_grace_abandons_the_producer(make_manager: MakeManager) -> None:
    """Generation costs GPU time; a client that never comes back must not keep it busy."""
    manager, _ = make_manager(grace=0.05)
    producer = Producer()
    sid = await manager.start(producer.events())
    producer.send("e0")
    assert await read_some(manager, sid, 1) == [frame(sid, 0, "e0")]
    assert not producer.ended.is_set()

    await producer.wait_ended()
    assert producer.ended_by in (asyncio.CancelledError, GeneratorExit)
    await until(lambda: manager.finished(sid))
    assert manager.live_count == 0
    assert manager.counters.abandoned == 1
    assert manager.counters.disconnects == 1
    assert manager.counters.cancelled == 0
    ending = await read_all(manager, sid, after=0, resumed=True)
    assert error_body(ending[0])["code"] == "abandoned" and ending[1:] == [frame(sid, 2, "[DONE]")]


async def test_a_non_resumable_stream_stops_when_its_only_reader_leaves(make_manager: MakeManager) -> None:
    """With resumption off nobody can come back, so waiting out the grace period would only waste work."""
    manager, log = make_manager(grace=10.0)
    producer = Producer()
    sid = await manager.start(producer.events(), resumable=False)
    producer.send("e0")
    producer.send("e1")
    other = manager.read(sid)
    assert await asyncio.wait_for(anext(other), TIMEOUT_S) == frame(sid, 0, "e0")

    assert await read_some(manager, sid, 1) == [frame(sid, 0, "e0")]
    await asyncio.sleep(0.02)
    assert not producer.ended.is_set(), "a reader left while another was still attached"
    assert manager.counters.disconnects == 0

    await other.aclose()
    await producer.wait_ended()
    assert producer.ended_by in (asyncio.CancelledError, GeneratorExit)
    await until(lambda: manager.finished(sid))
    assert manager.counters.disconnects == 1
    assert manager.counters.abandoned == 0
    assert await log.last_seq(sid) == 3
    ending = await read_all(manager, sid, after=1)
    assert error_body(ending[0])["code"] == "abandoned" and ending[-1] == frame(sid, 3, "[DONE]")


async def test_cancel_stops_at_once_and_readers_learn_why(make_manager: MakeManager) -> None:
    """DELETE /v1/streams/{id} must end generation now; attached readers get `cancelled`, then [DONE]."""
    manager, log = make_manager(grace=10.0)
    producer = Producer()
    sid = await manager.start(producer.events())
    reader = asyncio.create_task(read_all(manager, sid))
    producer.send("e0")
    await until(lambda: _last_seq_is(log, sid, 0))

    assert await manager.cancel(sid) is True
    assert producer.ended.is_set()
    assert producer.ended_by in (asyncio.CancelledError, GeneratorExit)
    frames = await reader
    assert frames[0] == frame(sid, 0, "e0") and frames[2:] == [frame(sid, 2, "[DONE]")]
    assert error_body(frames[1]) == {
        "message": "the stream was cancelled",
        "type": "stream_cancelled",
        "param": None,
        "code": "cancelled",
    }
    assert manager.counters.cancelled == 1
    assert manager.counters.disconnects == 0
    assert manager.live_count == 0
    assert await manager.cancel(sid) is False
    assert await manager.cancel("no-such-stream") is False
    assert manager.counters.cancelled == 1


@pytest.mark.parametrize("stop", ["cancel", "shutdown"])
async def test_stopping_a_stream_right_after_start_still_closes_it(make_manager: MakeManager, stop: str) -> None:
    """Regression: a producer task cancelled before its first step never entered its clean-up, so
    the stream had no [DONE], its log never closed and its readers hung."""
    manager, log = make_manager()
    producer = Producer()
    producer.send("e0")
    sid = await manager.start(producer.events())
    if stop == "cancel":
        await manager.cancel(sid)
    else:
        await manager.shutdown()
    assert manager.live_count == 0
    assert await log.is_closed(sid)
    frames = await read_all(manager, sid)
    assert error_body(frames[-2])["code"] == ("cancelled" if stop == "cancel" else "server_shutdown")
    assert frames[-1].endswith(DONE_DATA)


async def test_shutdown_sends_a_server_shutdown_error_then_done(make_manager: MakeManager) -> None:
    """A restarting server tells every reader why the stream ended, in a shape OpenAI clients parse."""
    manager, log = make_manager()
    producers = [Producer(), Producer()]
    sids = [await manager.start(p.events()) for p in producers]
    readers = [asyncio.create_task(read_all(manager, sid)) for sid in sids]
    for p in producers:
        p.send("e0")
    for sid in sids:
        await until(lambda sid=sid: _last_seq_is(log, sid, 0))

    await manager.shutdown()
    assert manager.live_count == 0
    for sid, reader, p in zip(sids, readers, producers, strict=True):
        frames = await reader
        assert p.ended_by in (asyncio.CancelledError, GeneratorExit)
        assert len(frames) == 3
        assert frames[0] == frame(sid, 0, "e0")
        assert frames[1].startswith(f"id: {sid}:1\nevent: error\n".encode())
        assert error_body(frames[1]) == {
            "message": "the server is shutting down; send the request again",
            "type": "server_error",
            "param": None,
            "code": "server_shutdown",
        }
        assert frames[2] == frame(sid, 2, "[DONE]")


async def test_a_failing_producer_ends_the_stream_with_an_error_and_done(make_manager: MakeManager) -> None:
    """A bug in a producer must reach readers as an error event, never as a stream that hangs."""
    manager, _ = make_manager()
    producer = Producer()
    sid = await manager.start(producer.events())
    reader = asyncio.create_task(read_all(manager, sid))
    producer.send("e0")
    producer.fail(RuntimeError("boom"))
    frames = await reader
    assert frames[0] == frame(sid, 0, "e0")
    assert error_body(frames[1]) == {"message": "boom", "type": "server_error", "param": None, "code": "stream_failed"}
    assert frames[2] == frame(sid, 2, "[DONE]")
    assert len(frames) == 3
    assert manager.live_count == 0
    assert await manager.finished(sid)


async def test_counters_add_up_over_several_streams(make_manager: MakeManager) -> None:
    """The counters feed the metrics endpoint, so each kind of ending must land in its own counter."""
    manager, _ = make_manager(grace=0.05)
    finished, abandoned, cancelled = Producer(), Producer(), Producer()
    sids = {name: await manager.start(p.events()) for name, p in [("f", finished), ("a", abandoned), ("c", cancelled)]}
    for p in (finished, abandoned, cancelled):
        p.send("e0")
    finished.finish()
    await read_all(manager, sids["f"])
    await read_all(manager, sids["f"], after=0, resumed=True)
    await read_some(manager, sids["a"], 1)
    await abandoned.wait_ended()
    await manager.cancel(sids["c"])
    assert asdict(manager.counters) == {
        "started": 3,
        "resumed": 1,
        "disconnects": 1,
        "abandoned": 1,
        "cancelled": 1,
        "taken_over": 0,
    }


async def test_reading_an_unknown_stream_raises(make_manager: MakeManager) -> None:
    manager, _ = make_manager()
    with pytest.raises(UnknownStreamError):
        await read_all(manager, "no-such-stream")


def test_done_event_is_the_openai_terminator() -> None:
    assert (DONE_EVENT.name, DONE_EVENT.data) == (None, "[DONE]")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("abc:12", ("abc", 12)), (" abc:0\n", ("abc", 0)), ("a:b:7", ("a:b", 7))],
)
def test_parse_event_id_accepts_stream_and_number(value: str, expected: tuple[str, int]) -> None:
    assert parse_event_id(value) == expected
    assert parse_event_id(value, expected[0]) == expected


@pytest.mark.parametrize("value", ["abc", ":3", "abc:x", "abc:", "abc:-1", "abc:1.5", ""])
def test_parse_event_id_rejects_malformed_ids(value: str) -> None:
    with pytest.raises(BadEventIdError):
        parse_event_id(value)


def test_parse_event_id_rejects_an_id_of_another_stream() -> None:
    """Resuming stream B from an id of stream A would replay from the wrong place."""
    with pytest.raises(BadEventIdError, match="another stream"):
        parse_event_id("abc:3", "xyz")


def test_parse_event_id_rejects_digits_that_int_cannot_read() -> None:
    """Regression: `str.isdigit()` accepts '²', which `int()` rejects: a plain ValueError escaped (500)."""
    with pytest.raises(BadEventIdError):
        parse_event_id("abc:\u00b2", "abc")


async def test_stopping_before_the_first_step_still_closes_the_whole_event_chain(make_manager: MakeManager) -> None:
    """Regression: a producer cancelled before its first step left the protocol's generator unstarted,
    so the clean-up inside it (where the engine request is aborted) never ran and the engine kept
    generating for nobody."""
    manager, _ = make_manager()
    closed = asyncio.Event()

    async def engine_deltas() -> AsyncIterator[StreamEvent]:
        try:
            await asyncio.Event().wait()  # the engine has produced nothing yet
            yield StreamEvent(None, "never")
        finally:
            closed.set()  # stands for AsyncEngine aborting the request

    async def protocol_events() -> AsyncIterator[StreamEvent]:
        async for event in engine_deltas():
            yield event

    for stop in ("cancel", "shutdown"):
        closed.clear()
        sid = await manager.start(protocol_events())
        await (manager.cancel(sid) if stop == "cancel" else manager.shutdown())
        assert closed.is_set(), stop
