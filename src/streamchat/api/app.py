"""The FastAPI application: routers, CORS, errors, and model loading in the background."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from streamchat.api import errors, glm, health, metrics, openai, streams
from streamchat.api.body_limit import BodyLimitMiddleware
from streamchat.api.metrics import Metrics
from streamchat.api.request_log import RequestLogMiddleware, log_answer
from streamchat.api.state import ModelInfo, ServerState
from streamchat.api.wire import WireMetricsMiddleware
from streamchat.config import Settings
from streamchat.engine.factory import BuiltEngine, build_engine

log = logging.getLogger(__name__)


def create_app(settings: Settings, built: BuiltEngine | None = None) -> FastAPI:
    """`built` lets a caller hand over an engine it has already loaded; otherwise we load in the background."""
    state = ServerState(settings)
    meters = Metrics(state)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        task = None
        if built is not None:
            _attach(state, built, meters)
        else:
            task = asyncio.create_task(_load(state, meters))
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
    app.state.metrics = meters
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)  # inside CORS: 413s get its headers
    app.add_middleware(
        CORSMiddleware,
        allow_origins=settings.cors_origins,
        allow_credentials=False,
        allow_methods=["*"],
        allow_headers=["*"],
        expose_headers=["X-Stream-Id", "Retry-After", "X-Request-Id"],
    )
    app.add_middleware(WireMetricsMiddleware, metrics=meters)  # outside CORS and body limits: counts every answer
    app.add_middleware(RequestLogMiddleware, log_prompts=settings.log_prompts)
    errors.install(app)
    app.include_router(health.router)
    app.include_router(openai.router)
    app.include_router(streams.router)
    app.include_router(glm.router)
    app.include_router(metrics.router)
    return app


def _attach(state: ServerState, built: BuiltEngine, meters: Metrics) -> None:
    meters.instrument(built.engine, log_answer if state.settings.log_prompts else None)
    built.engine.on_death = lambda exc: state.on_fatal and state.on_fatal(f"engine thread died: {exc!r}")
    built.engine.start()
    state.model = ModelInfo(built.name, built.max_model_len, built.tokenizer, int(time.time()))
    state.engine = built.engine


async def _load(state: ServerState, meters: Metrics) -> None:
    try:
        built = await asyncio.to_thread(build_engine, state.settings)
    except Exception as exc:
        log.exception("model failed to load")
        state.load_error = str(exc)
        return
    _attach(state, built, meters)
    log.info("serving %s", built.name)
