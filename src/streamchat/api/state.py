"""What the routes share: settings, and the engine once the model has loaded.

The model loads on a background thread after the server starts listening, so `/health` can say
503 while loading, and every model route gives a clear 503 until then.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from streamchat.api.errors import APIError
from streamchat.api.limits import KeyLimiter
from streamchat.config import Settings
from streamchat.engine.async_engine import AsyncEngine
from streamchat.engine.types import Delta, GenerationRequest
from streamchat.streams.log import MemoryStreamLog
from streamchat.streams.manager import StreamManager


@dataclass
class ModelInfo:
    name: str
    max_model_len: int
    tokenizer: object
    created: int


@dataclass
class ServerState:
    settings: Settings
    engine: AsyncEngine | None = None
    model: ModelInfo | None = None
    load_error: str | None = None
    streams: StreamManager = field(init=False)
    draining: bool = False
    on_fatal: Callable[[str], None] | None = None  # the server exits when the engine cannot go on

    def __post_init__(self) -> None:
        self.api_keys = self.settings.api_keys()
        self.limiter = KeyLimiter(self.settings.rate_limit_rpm, self.settings.max_concurrent_per_key)
        log = MemoryStreamLog(self.settings.stream_retention, self.settings.stream_log_bytes)
        self.streams = StreamManager(log, self.settings.resume_grace)

    @property
    def busy(self) -> bool:
        """Whether any request is still being answered."""
        return bool(self.streams.live_count or (self.engine is not None and self.engine.num_pending))

    def require_ready(self) -> tuple[AsyncEngine, ModelInfo]:
        if self.draining:
            raise APIError(
                503,
                "the server is shutting down; retry on another instance or later",
                code="server_shutdown",
                headers={"Retry-After": "5"},
            )
        if self.load_error:
            raise APIError(503, f"the model failed to load: {self.load_error}", code="model_load_failed")
        if self.engine is None or self.model is None:
            raise APIError(
                503, "the model is still loading; retry shortly", code="model_loading", headers={"Retry-After": "5"}
            )
        if not self.engine.alive:
            raise APIError(503, "the engine has stopped", code="engine_dead")
        return self.engine, self.model

    def check_model_name(self, requested: str | None) -> None:
        _, info = self.require_ready()
        if requested and requested != info.name:
            raise APIError(
                404,
                f"The model '{requested}' does not exist; this server serves '{info.name}'",
                param="model",
                code="model_not_found",
            )

    def check_room(self) -> str | None:
        """Refuse at once (429) when the caller's streams or the server's queue are full.

        Routes call it before they tokenize, so a refused request costs no tokenizer work;
        `submit` checks again. Returns the caller's key digest (the request's owner).
        """
        engine, _ = self.require_ready()
        owner = key_digest(CALLER_KEY.get())
        self.limiter.check_concurrency(owner, engine.num_pending_for(owner))
        capacity = self.settings.max_num_seqs + self.settings.max_queue
        if engine.num_pending >= capacity:
            raise APIError(
                429,
                f"the server is at capacity ({self.settings.max_num_seqs} running and "
                f"{self.settings.max_queue} waiting); retry later",
                code="queue_full",
                headers={"Retry-After": "1"},
            )
        return owner

    def submit(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        """Queue a request, refusing at once (429) when there is no room for it."""
        request.owner = self.check_room()
        engine, _ = self.require_ready()
        return engine.generate(request)


CALLER_KEY: ContextVar[str | None] = ContextVar("caller_key", default=None)  # set by the auth dependency


def key_digest(key: str | None) -> str | None:
    """Keys are never kept in request state in the clear."""
    return hashlib.sha256(key.encode()).hexdigest()[:16] if key is not None else None


def get_state(request: Request) -> ServerState:
    return request.app.state.streamchat


State = Annotated[ServerState, Depends(get_state)]
