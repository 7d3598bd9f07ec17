"""Readiness, resolved once per request: the one dependency that yields the engine and the model.

Model routes take `ReadyServer`; until the model has loaded (or when it failed, the engine died,
or the server is draining) it answers 503 before the route runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from streamchat.api.errors import APIError
from streamchat.api.state import ModelInfo, ServerState, State
from streamchat.engine.async_engine import AsyncEngine


@dataclass(frozen=True)
class Ready:
    state: ServerState
    engine: AsyncEngine
    model: ModelInfo

    def check_model_name(self, requested: str | None) -> None:
        if requested and requested != self.model.name:
            raise APIError(
                404,
                f"The model '{requested}' does not exist; this server serves '{self.model.name}'",
                param="model",
                code="model_not_found",
            )


def engine_stopped() -> APIError:
    return APIError(503, "the engine has stopped", code="engine_dead")


def ready(state: State) -> Ready:
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


ReadyServer = Annotated[Ready, Depends(ready)]
