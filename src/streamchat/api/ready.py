"""Readiness, resolved once per request: the one dependency that yields the engine and the model.

Model routes take `ReadyServer`; until the model has loaded (or when it failed, the engine died,
or the server is draining) it answers 503 before the route runs. With several models, the route's
`check_model_name` switches to the one the request names; one that is not loaded yet is loaded
first, the request waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from streamchat.api.errors import APIError
from streamchat.api.state import ModelInfo, ServerState, State
from streamchat.engine.async_engine import AsyncEngine


@dataclass
class Ready:
    """The engine and model of one request: the default model until `check_model_name` picks another."""

    state: ServerState
    engine: AsyncEngine
    model: ModelInfo

    def check_model_name(self, requested: str | None) -> None:
        """Answer with the model the request names (none: the default); 404 naming the served ones."""
        if not requested or requested == self.model.name:
            return
        extra = self.state.extra_models
        slot = extra.get(requested) if extra is not None else None
        if slot is None:
            served = [self.model.name, *(extra.slots if extra is not None else ())]
            raise APIError(
                404,
                f"The model '{requested}' does not exist; this server serves "
                + ", ".join(f"'{name}'" for name in served),
                param="model",
                code="model_not_found",
            )
        self.engine, self.model = slot.use()


def engine_stopped() -> APIError:
    return APIError(503, "the engine has stopped", code="engine_dead")


def ready_now(state: ServerState) -> Ready:
    """The default model, or the 503 that says why it cannot answer."""
    if state.draining:
        raise APIError(
            503,
            "the server is shutting down; retry on another instance or later",
            code="server_shutdown",
            headers={"Retry-After": "5"},
        )
    if state.load_error:
        raise APIError(503, f"the model failed to load: {state.load_error}", code="model_load_failed")
    if state.engine is None or state.model is None:
        raise APIError(
            503, "the model is still loading; retry shortly", code="model_loading", headers={"Retry-After": "5"}
        )
    if not state.engine.alive:
        raise engine_stopped()
    return Ready(state, state.engine, state.model)


async def ready(state: State, request: Request) -> Ready:
    """The dependency: ready now, and the model a POST body names loaded."""
    found = ready_now(state)
    if state.extra_models is not None:
        await _named_model_loaded(state, request)
    return found


async def _named_model_loaded(state: ServerState, request: Request, patience: float = 600.0) -> None:
    """A request naming a model that is not loaded waits for its load, as Ollama's clients expect,
    rather than getting a 503. The body is read once and kept: the route parses the same bytes."""
    if request.method != "POST" or state.extra_models is None:
        return
    try:
        body = await request.json()
    except ValueError:  # not JSON: the route answers that
        return
    name = body.get("model") if isinstance(body, dict) else None
    if isinstance(name, str):
        await model_loaded(state, name, patience)


async def model_loaded(state: ServerState, name: str, patience: float = 600.0) -> None:
    """Wait until the extra model `name` has loaded (starting its load); at most `patience` seconds,
    after which `check_model_name` answers the 503 that says it is still loading."""
    slot = state.extra_models.get(name) if state.extra_models is not None else None
    if slot is None or slot.status not in ("unloaded", "loading"):
        return
    slot.start_loading()
    if slot.loader is not None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(slot.loader), patience)


ReadyServer = Annotated[Ready, Depends(ready)]
