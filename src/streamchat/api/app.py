"""The FastAPI application: routers, CORS, errors, and model loading in the background."""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from streamchat.api import anthropic, errors, health, ollama, openai, responses, resume, seed
from streamchat.api.json_body import JSONBodyMiddleware
from streamchat.api.model_slots import ExtraModels, model_info
from streamchat.api.request_log import RequestLogMiddleware
from streamchat.api.size_limits import SizeLimitMiddleware
from streamchat.api.state import ServerState
from streamchat.api.takeover import continuer
from streamchat.api.threads import in_passing_thread
from streamchat.api.wire import WireMetricsMiddleware
from streamchat.config import Settings
from streamchat.engine.factory import BuiltEngine, build_engine
from streamchat.models_file import read_models_file

log = logging.getLogger(__name__)


def create_app(settings: Settings, built: BuiltEngine | None = None) -> FastAPI:
    """`built` lets a caller hand over an engine it has already loaded; otherwise we load in the background."""
    state = ServerState(settings)
    state.streams.continuer = continuer(state)  # streams taken over from a process that died

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        task = None
        if settings.models_file is not None:
            state.extra_models = ExtraModels(read_models_file(settings.models_file, settings))
        if built is not None:
            _attach(state, built)
            if state.extra_models is not None:
                task = asyncio.create_task(state.extra_models.start())
        else:
            task = asyncio.create_task(_load(state))
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
            await state.streams.shutdown()
            await state.responses.close()
            if state.extra_models is not None:
                await state.extra_models.stop()
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
    state.model = model_info(built)
    state.engine = built.engine


async def _load(state: ServerState) -> None:
    try:
        built = await in_passing_thread(build_engine, state.settings)
    except Exception as exc:
        log.exception("model failed to load")
        state.load_error = str(exc)
        return
    _attach(state, built)
    log.info("serving %s", built.name)
    if state.extra_models is not None:
        await state.extra_models.start()
