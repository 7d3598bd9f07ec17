"""The real app in this process, over ASGI, with a stand-in model: API semantics without weights.

Validation, error shapes, auth, limits and ceilings are decided before or around the engine; the
model's words add nothing to them. So the app here is the real one (`create_app`, its lifespan,
its middleware, the real `LLMEngine` and `AsyncEngine` on their own thread, the embedded model's
real tokenizer), and only the `Runner` is fake: every forward puts all the weight on one known
token (`ANSWER_WORD`), so every answer is that word repeated, and a gate can hold forwards back
so a test can keep requests in flight as long as it needs.

httpx's `ASGITransport` (0.28) runs the app to the end of its response before handing it over: an
SSE body arrives whole, never piece by piece. A request held in flight is therefore a task that
has not returned yet; `holding()` starts such tasks and waits until the engine counts them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import torch
from fastapi import FastAPI
from transformers import PreTrainedTokenizerBase

from streamchat.api.app import create_app
from streamchat.api.state import ServerState
from streamchat.config import Settings
from streamchat.engine.async_engine import AsyncEngine
from streamchat.engine.factory import BuiltEngine
from streamchat.engine.llm_engine import LLMEngine
from streamchat.engine.sampling_defaults import parse

MODEL_NAME = "fake-smollm2"
MAX_MODEL_LEN = 2048  # the real test server's context (llama.cpp: min(native 8192, 2048))
ANSWER_WORD = " hello"  # one token in the embedded model's vocabulary
HELD_FORWARD_TIMEOUT_S = 60.0  # a gate nobody opens fails the step instead of hanging the engine thread
WAIT_S = 10.0
REFUSAL_DEADLINE_S = 5.0  # a refusal that waited for capacity would wait for the held forward


class NoRowCache:
    """Nothing is cached: the fake runner computes nothing it could reuse."""

    def move_row(self, src: int, dst: int) -> None:
        pass

    def swap_rows(self, a: int, b: int) -> None:
        pass

    def release(self) -> None:
        pass


class FakeRunner:
    """A `Runner` whose every row of logits picks `answer_token`; it records what it was fed.

    `hold()` closes a gate that the next forward waits at (on the engine thread) until `release()`,
    so requests stay in flight, counted by admission, for as long as a test needs.
    """

    max_row_chunk: int | None = None
    prefixes = None

    def __init__(self, vocab_size: int, answer_token: int) -> None:
        self.cache = NoRowCache()
        self.vocab_size = vocab_size
        self.answer_token = answer_token
        self.prompts: list[list[int]] = []  # every chunk fed from position 0: one per sequence prefilled
        self._lock = threading.Lock()
        self._gate = threading.Event()
        self._gate.set()

    def hold(self) -> None:
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def forward(self, first_row: int, chunks: list[list[int]], starts: list[int]) -> torch.Tensor:
        with self._lock:
            self.prompts.extend(list(chunk) for chunk, start in zip(chunks, starts, strict=True) if start == 0)
        if not self._gate.wait(HELD_FORWARD_TIMEOUT_S):
            raise RuntimeError("a held forward was never released")
        logits = torch.zeros(len(chunks), self.vocab_size, dtype=torch.float32)
        logits[:, self.answer_token] = 100.0  # every other token is e^-100 less likely: greedy or not
        return logits

    def fed_text(self, tokenizer: PreTrainedTokenizerBase) -> str:
        """Every prompt the engine prefilled, decoded, to show what reached the model."""
        with self._lock:
            prompts = [list(p) for p in self.prompts]
        return "\n".join(tokenizer.decode(p) for p in prompts)


def answer_token(tokenizer: PreTrainedTokenizerBase) -> int:
    (token,) = tokenizer.encode(ANSWER_WORD)
    return token


def build_app(tokenizer: PreTrainedTokenizerBase, settings: Settings) -> tuple[FastAPI, FakeRunner]:
    """The real app around a real engine whose runner is fake; its lifespan is not entered yet."""
    runner = FakeRunner(len(tokenizer), answer_token(tokenizer))
    llm = LLMEngine(
        runner,
        tokenizer,
        {tokenizer.eos_token_id},
        MAX_MODEL_LEN,
        settings.max_num_seqs,
        settings.max_num_seqs * MAX_MODEL_LEN,  # every row at full length: nothing is ever preempted
        settings.prefill_chunk,
        settings.seed,
    )
    name = settings.served_model_name or MODEL_NAME
    defaults = parse(settings.sampling_defaults)  # the operator's; the fake model has none of its own
    return create_app(settings, BuiltEngine(AsyncEngine(llm), name, MAX_MODEL_LEN, tokenizer, defaults)), runner


@dataclass
class InProcess:
    """A running in-process app, the client that talks to it, and its fake runner."""

    app: FastAPI
    client: httpx.AsyncClient
    runner: FakeRunner
    tokenizer: PreTrainedTokenizerBase

    @property
    def state(self) -> ServerState:
        return self.app.state.streamchat

    @property
    def engine(self) -> AsyncEngine:
        assert self.state.engine is not None, "the lifespan attaches the engine"
        return self.state.engine

    def fed_text(self) -> str:
        return self.runner.fed_text(self.tokenizer)


StartInProcess = Callable[[Settings], AbstractAsyncContextManager[InProcess]]


@asynccontextmanager
async def serve_in_process(
    tokenizer: PreTrainedTokenizerBase, settings: Settings | None = None
) -> AsyncIterator[InProcess]:
    """The app with its lifespan running (engine thread started), and a client talking ASGI to it."""
    app, runner = build_app(tokenizer, settings or Settings())
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30.0) as client:
                yield InProcess(app, client, runner, tokenizer)
        finally:
            runner.release()  # a forward still held would keep the engine thread from stopping


async def wait_until(predicate: Callable[[], bool], timeout: float = WAIT_S) -> bool:
    """Poll `predicate` on the event loop (the app runs here too) until it holds or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


@asynccontextmanager
async def holding(
    server: InProcess, sends: list[Callable[[], Coroutine[Any, Any, httpx.Response]]]
) -> AsyncIterator[list[asyncio.Task[httpx.Response]]]:
    """Keep the requests `sends` make in flight (runner held, engine counting them) for the block.

    Yields their tasks; after the block the runner is released and every task has finished, so a
    test can check that each held request was answered.
    """
    server.runner.hold()
    before = server.engine.num_pending
    tasks = [asyncio.create_task(send()) for send in sends]
    try:
        counted = await wait_until(lambda: server.engine.num_pending >= before + len(tasks))
        assert counted, f"{server.engine.num_pending - before} of {len(tasks)} held requests reached the engine"
        yield tasks
    finally:
        server.runner.release()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), WAIT_S * 3)


async def at_once(response: Awaitable[httpx.Response]) -> httpx.Response:
    """The response, which must come while the runner is held: a refusal never waits for capacity."""
    try:
        return await asyncio.wait_for(response, REFUSAL_DEADLINE_S)
    except TimeoutError:
        raise AssertionError(f"no answer within {REFUSAL_DEADLINE_S} s: it was admitted, not refused") from None
