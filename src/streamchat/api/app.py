"""The FastAPI application: routers, CORS, errors, and model loading in the background."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from streamchat.api import anthropic, errors, health, ollama, openai, responses, resume, seed
from streamchat.api.json_body import JSONBodyMiddleware
from streamchat.api.request_log import RequestLogMiddleware
from streamchat.api.size_limits import SizeLimitMiddleware
from streamchat.api.state import ModelInfo, ServerState
from streamchat.api.wire import WireMetricsMiddleware
from streamchat.config import Settings
from streamchat.engine.factory import BuiltEngine, build_engine

log = logging.getLogger(__name__)
T = TypeVar("T")


def create_app(settings: Settings, built: BuiltEngine | None = None) -> FastAPI:
    """`built` lets a caller hand over an engine it has already loaded; otherwise we load in the background."""
    state = ServerState(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        task = None
        if built is not None:
            _attach(state, built)
        else:
            task = asyncio.create_task(_load(state))
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
            await state.streams.shutdown()
            if state.engine is not None:
                state.engine.stop()

    app = FastAPI(title="streamchat", version="0.1.0", lifespan=lifespan)
    app.state.streamchat = state
    app.add_middleware(JSONBodyMiddleware)
    app.add_middleware(SizeLimitMiddleware, max_body_bytes=settings.max_body_bytes)  # inside CORS: 413s get its headers
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_credentials=False,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["X-Stream-Id", "Retry-After", "X-Request-Id"],
    )
    # outside CORS and body limits: counts every answer
    app.add_middleware(WireMetricsMiddleware, metrics=state.metrics)
    app.add_middleware(RequestLogMiddleware, log_prompts=settings.log_prompts)
    errors.install(app)
    app.include_router(health.router)
    app.include_router(openai.router)
    app.include_router(anthropic.router)
    app.include_router(ollama.router)
    app.include_router(responses.router)
    app.include_router(resume.router)
    app.include_router(seed.router)
    return app


def _attach(state: ServerState, built: BuiltEngine) -> None:
    built.engine.on_death = lambda exc: state.on_fatal and state.on_fatal(f"engine thread died: {exc!r}")
    built.engine.start()
    state.model = ModelInfo(
        built.name,
        built.max_model_len,
        built.tokenizer,
        int(time.time()),
        dict(built.sampling_defaults),
        built.grammars,
    )
    state.engine = built.engine


async def in_passing_thread(fn: Callable[..., T], *args: object) -> T:
    """Run `fn(*args)` on a thread of its own that ends with it, and await the result.

    Why not `asyncio.to_thread`: GNU OpenMP keeps a team of worker threads for every thread that
    ran a parallel region. A pool thread that loaded the model would keep its team beside the
    engine thread's, and with more OpenMP threads than cores libgomp stops spinning and wakes its
    workers through futexes at every op: the transformers engine decoded ~1.5x slower. A thread
    that ends takes its team with it.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, exc: BaseException | None) -> None:
        if done.done():  # the awaiting task was cancelled (server stopping during the load)
            return
        if exc is not None:
            done.set_exception(exc)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # handed to the awaiting task, which logs it
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=run, name="streamchat-load", daemon=True).start()
    return await done


async def _load(state: ServerState) -> None:
    try:
        built = await in_passing_thread(build_engine, state.settings)
    except Exception as exc:
        log.exception("model failed to load")
        state.load_error = str(exc)
        return
    _attach(state, built)
    log.info("serving %s", built.name)
