"""What the routes share: settings, the engine once the model has loaded, the stream manager.

The model loads on a background thread after the server starts listening, so `/health` can say
503 while loading; model routes resolve readiness once per request through `ready.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from streamchat.api.admission import Admission, FailedAuthThrottle
from streamchat.api.metrics import Metrics
from streamchat.api.response_store import MemoryResponseStore, ResponseStore
from streamchat.config import Settings
from streamchat.engine.async_engine import AsyncEngine
from streamchat.engine.grammar.compiler import GrammarCompiler
from streamchat.streams.log import MemoryStreamLog, StreamLog
from streamchat.streams.manager import StreamManager

if TYPE_CHECKING:
    from streamchat.api.model_slots import ExtraModels


@dataclass(frozen=True)
class ModelInfo:
    name: str
    max_model_len: int
    tokenizer: object
    created: int
    sampling_defaults: dict[str, float] = field(default_factory=dict)  # for settings a request leaves unset
    grammars: GrammarCompiler | None = None  # None: this model takes no grammars


@dataclass
class ServerState:
    settings: Settings
    engine: AsyncEngine | None = None
    model: ModelInfo | None = None
    load_error: str | None = None
    draining: bool = False
    on_fatal: Callable[[str], None] | None = None  # the server exits when the engine cannot go on
    streams: StreamManager = field(init=False)
    admission: Admission = field(init=False)
    auth_throttle: FailedAuthThrottle | None = field(init=False)
    metrics: Metrics = field(init=False)
    responses: ResponseStore = field(init=False)  # the Responses API's stored responses
    extra_models: ExtraModels | None = None  # models served beside the default one (--models-file)

    def __post_init__(self) -> None:
        s = self.settings
        self.api_keys = s.api_keys()
        self.admission = Admission(s.rate_limit_rpm, s.max_concurrent_per_key, s.max_num_seqs, s.max_queue)
        self.auth_throttle = FailedAuthThrottle(s.auth_failures_per_minute) if s.auth_failures_per_minute else None
        self.streams = StreamManager(stream_log(s), s.resume_grace)
        self.metrics = Metrics(self)
        self.responses = response_store(s, self.streams.log)

    @property
    def busy(self) -> bool:
        """Whether any request is still being answered."""
        extra = sum(slot.pending for slot in self.extra_models.slots.values()) if self.extra_models else 0
        return bool(self.streams.live_count or extra or (self.engine is not None and self.engine.num_pending))


def stream_log(s: Settings) -> StreamLog:
    """The configured stream store: this process's memory, or Redis shared by every process."""
    if s.stream_store == "memory":
        return MemoryStreamLog(s.stream_retention, s.stream_log_bytes)
    from streamchat.streams.redis_log import RedisStreamLog

    return RedisStreamLog(s.stream_store, s.stream_retention, lease=s.stream_lease)


def response_store(s: Settings, log: StreamLog) -> ResponseStore:
    """Stored responses beside the streams: in this process's memory, or in the same Redis (one
    connection pool), so every process sees every response."""
    if s.stream_store == "memory":
        return MemoryResponseStore(s.responses_store_size, s.responses_store_ttl)
    from streamchat.api.response_store_redis import RedisResponseStore
    from streamchat.streams.redis_log import RedisStreamLog

    if not isinstance(log, RedisStreamLog):
        raise TypeError("stored responses live in Redis only beside a Redis stream log")
    return RedisResponseStore(log.client, s.responses_store_size, s.responses_store_ttl)


def get_state(request: Request) -> ServerState:
    return request.app.state.streamchat


State = Annotated[ServerState, Depends(get_state)]
