"""Faults injected on purpose: a failing forward, and an engine thread that dies.

The runner is wrapped to fail on command: a real model cannot be made to fail at a chosen step.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import pytest
import torch
import uvicorn

from streamchat.api.app import create_app
from streamchat.chat.prompt import render
from streamchat.config import Settings
from streamchat.engine.async_engine import AsyncEngine, EngineDeadError
from streamchat.engine.factory import BuiltEngine
from streamchat.engine.llm_engine import LLMEngine
from streamchat.engine.transformers.loader import LoadedModel
from streamchat.engine.transformers.runner import TransformersRunner
from streamchat.engine.types import FinishReason, GenerationRequest, SamplingParams
from streamchat.server import DrainingServer
from tests.support import parse_sse


class EngineCrash(BaseException):
    """Stands for what no `except Exception` catches (e.g. a fatal error deep in a native library)."""


class FaultyRunner:
    """A real runner that raises `fault` on the forward after `arm()` was called."""

    max_row_chunk = None
    prefixes = None

    def __init__(self, runner: TransformersRunner) -> None:
        self._runner = runner
        self.cache = runner.cache
        self.fault: BaseException | None = None

    def arm(self, fault: BaseException) -> None:
        self.fault = fault

    def forward(self, first_row: int, chunks: list[list[int]], starts: list[int]) -> torch.Tensor:
        if self.fault is not None:
            fault, self.fault = self.fault, None
            raise fault
        return self._runner.forward(first_row, chunks, starts)


def build(loaded: LoadedModel) -> tuple[AsyncEngine, FaultyRunner]:
    runner = FaultyRunner(TransformersRunner(loaded.model))
    core = LLMEngine(runner, loaded.tokenizer, loaded.eos_token_ids, loaded.max_model_len, 8, 50_000)
    return AsyncEngine(core), runner


def request(loaded: LoadedModel, max_tokens: int = 200) -> GenerationRequest:
    ids = render(loaded.tokenizer, [{"role": "user", "content": "Tell me a story."}])
    return GenerationRequest(ids, SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True))


async def test_a_failed_step_ends_the_streams_in_it_with_an_error_and_the_engine_goes_on(loaded) -> None:
    engine, runner = build(loaded)
    engine.start()
    try:
        first = engine.generate(request(loaded))
        await anext(first)  # running
        runner.arm(RuntimeError("injected fault"))
        deltas = [d async for d in first]
        assert deltas[-1].finish_reason is FinishReason.ERROR
        assert "injected fault" in deltas[-1].error
        after = [d async for d in engine.generate(request(loaded, max_tokens=5))]
        assert after[-1].finish_reason is FinishReason.LENGTH and len(after) == 5
        assert engine.alive and engine.snapshot().running == 0
    finally:
        engine.stop()


async def test_a_dead_engine_thread_fails_its_streams_and_says_so(loaded) -> None:
    engine, runner = build(loaded)
    deaths: list[BaseException] = []
    engine.on_death = deaths.append
    engine.start()
    stream = engine.generate(request(loaded))
    await anext(stream)
    runner.arm(EngineCrash("native crash"))
    rest = [d async for d in stream]
    assert rest[-1].finish_reason is FinishReason.ERROR
    assert len(deaths) == 1 and not engine.alive
    with pytest.raises(EngineDeadError):
        engine.generate(request(loaded))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def faulty_server(loaded):
    engine, runner = build(loaded)
    built = BuiltEngine(engine, "faulty", loaded.max_model_len, loaded.tokenizer)
    port = _free_port()
    settings = Settings(port=port, log_level="warning")
    app = create_app(settings, built)
    server = DrainingServer(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"), app.state.streamchat, grace=1
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    yield url, runner, server, thread
    server.should_exit = True
    thread.join(15)


def test_over_http_a_fault_mid_stream_is_an_error_event_then_done_and_the_server_stays_healthy(faulty_server):
    url, runner, server, thread = faulty_server
    body = {
        "messages": [{"role": "user", "content": "Tell me a story."}],
        "max_tokens": 300,
        "ignore_eos": True,
        "temperature": 0,
        "stream": True,
    }
    with httpx.Client(timeout=60) as client, client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
        text = ""
        for chunk in r.iter_text():
            if not text and chunk:
                runner.arm(RuntimeError("injected fault"))
            text += chunk
    events = parse_sse(text).events
    assert events[-1].data == "[DONE]"
    assert events[-2].event == "error"
    error = httpx.Response(200, content=events[-2].data).json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and "injected fault" in error["message"]
    assert httpx.get(f"{url}/health", timeout=5).status_code == 200
    ok = httpx.post(f"{url}/v1/chat/completions", json={**body, "stream": False, "max_tokens": 3}, timeout=60)
    assert ok.status_code == 200 and ok.json()["choices"][0]["finish_reason"] == "length"


def test_over_http_a_dead_engine_turns_health_503_and_the_server_exits_non_zero(faulty_server):
    url, runner, server, thread = faulty_server
    runner.arm(EngineCrash("native crash"))
    body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
    failed = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    assert failed.status_code == 500 and "native crash" in failed.json()["error"]["message"]
    thread.join(30)
    assert not thread.is_alive(), "the server must exit rather than hang"
    assert server.exit_code == 1


@pytest.fixture(autouse=True)
def _no_leaked_loops():
    yield
    asyncio.set_event_loop(None)
