"""The bridge between asyncio and the engine thread.

The model never runs on the event loop: one daemon thread owns the `LLMEngine` and loops
`step()` while there is work, sleeping on its inbox otherwise. Requests and aborts reach it through
a thread-safe queue; each step's deltas go back in one `call_soon_threadsafe` per event loop, so
the cost on the loop is one callback per step, not one per token.

Nothing outside the thread touches the `LLMEngine`: after every step the thread publishes an
`EngineSnapshot` (one reference swap), which `/health` and `/metrics` read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from streamchat.engine.llm_engine import EngineStats, LLMEngine
from streamchat.engine.types import Delta, FinishReason, GenerationRequest

log = logging.getLogger(__name__)


@dataclass
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Delta]
    owner: str | None = None


@dataclass(frozen=True)
class EngineSnapshot:
    """The engine's state as of its last step, for health checks and metrics."""

    running: int  # sequences holding a cache row
    waiting: int  # accepted, not yet running (queued in the engine or still in the inbox)
    counters: EngineStats
    mask_seconds: tuple[float, ...] = ()  # recent grammar-mask times of steps with constrained rows


class EngineDeadError(RuntimeError):
    """The engine thread has stopped; no request can be served."""


class RequestNotSupportedError(ValueError):
    """This engine cannot honour a setting the request made; `param` names it (the API answers 400)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


class AsyncEngine:
    def __init__(self, llm: LLMEngine) -> None:
        self._llm = llm  # owned by the engine thread
        self._published: tuple[int, EngineStats, tuple[float, ...]] = (0, llm.snapshot(), ())
        llm.on_admit = self._publish  # a request counts as running from its admission, not its first token
        self._inbox: queue.SimpleQueue[tuple[str, object]] = queue.SimpleQueue()
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="streamchat-engine", daemon=True)
        self._stopping = False
        self.on_death: Callable[[BaseException], None] | None = None  # set by whoever must exit on it
        self.error: BaseException | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        self._inbox.put(("wake", None))
        self._thread.join(timeout)

    @property
    def num_pending(self) -> int:
        """Requests accepted and not yet finished, running or not."""
        with self._lock:
            return len(self._streams)

    def num_pending_for(self, owner: str | None) -> int:
        with self._lock:
            return sum(1 for s in self._streams.values() if s.owner == owner)

    def snapshot(self) -> EngineSnapshot:
        running, counters, mask_seconds = self._published
        return EngineSnapshot(running, max(0, self.num_pending - running), counters, mask_seconds)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and self.error is None

    # -- requests -------------------------------------------------------------------------------
    def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Queue `request` now and return its deltas; leaving the iteration early aborts it.

        Queuing happens before the first `await`, so admission limits count this request at once.
        """
        if not self.alive:
            raise EngineDeadError("the engine is not running")
        stream = _Stream(asyncio.get_running_loop(), asyncio.Queue(), request.owner)
        with self._lock:
            self._streams[request.request_id] = stream
        self._inbox.put(("add", request))
        return self._consume(request.request_id, stream)

    async def _consume(self, request_id: str, stream: _Stream) -> AsyncIterator[Delta]:
        finished = False
        try:
            while not finished:
                delta = await stream.queue.get()
                finished = delta.finished
                yield delta
        finally:
            if not finished:
                self.abort(request_id)
            with self._lock:
                self._streams.pop(request_id, None)

    def abort(self, request_id: str) -> None:
        self._inbox.put(("abort", request_id))

    # -- the thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stopping:
                self._drain_inbox(block=not self._llm.has_work)
                if self._llm.has_work:
                    self._step()
        except BaseException as exc:  # the thread must never die silently
            log.exception("engine thread died")
            self.error = exc
            if self.on_death is not None:  # before the streams hear of it, so nothing new is accepted
                self.on_death(exc)
            self._fail_streams(str(exc))

    def _drain_inbox(self, block: bool) -> None:
        try:
            item = self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            kind, payload = item
            if kind == "add":
                self._llm.add(payload)  # type: ignore[arg-type]
            elif kind == "abort":
                delta = self._llm.abort(payload)  # type: ignore[arg-type]
                if delta is not None:
                    self._publish()
                    self._deliver([(payload, delta)])  # type: ignore[list-item]
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _step(self) -> None:
        try:
            outputs = self._llm.step()
        except Exception as exc:  # a failed forward ends the affected streams, not the server
            log.exception("engine step failed")
            outputs = self._llm.fail_running(f"{type(exc).__name__}: {exc}")
        self._publish()
        self._deliver(outputs)

    def _publish(self) -> None:
        self._published = (self._llm.num_running, self._llm.snapshot(), self._llm.mask_seconds)

    def _deliver(self, outputs: list[tuple[str, Delta]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[Delta], Delta]]] = {}
        with self._lock:
            for request_id, delta in outputs:
                # a finished request leaves the table here too, in case its reader never started
                stream = self._streams.pop(request_id, None) if delta.finished else self._streams.get(request_id)
                if stream is not None:
                    by_loop.setdefault(stream.loop, []).append((stream.queue, delta))
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: its readers are gone
                loop.call_soon_threadsafe(_put_all, items)

    def _fail_streams(self, message: str) -> None:
        with self._lock:
            ids = list(self._streams)
        self._deliver([(i, Delta("", finish_reason=FinishReason.ERROR, error=message)) for i in ids])


def _put_all(items: list[tuple[asyncio.Queue[Delta], Delta]]) -> None:
    for q, delta in items:
        q.put_nowait(delta)
