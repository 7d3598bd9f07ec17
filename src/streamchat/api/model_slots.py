"""The models served beside the default one: each loads at start or on first use, and may unload
after an idle time (like Ollama's keep-alive).

A request naming a model that is not loaded yet starts its load and gets 503 with `Retry-After`
(the OpenAI and Anthropic SDKs retry by themselves); a model that failed to load says why. An
unloaded model's engine is stopped and dropped, so its memory goes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Literal

from streamchat.api.errors import APIError
from streamchat.api.state import ModelInfo
from streamchat.api.threads import in_passing_thread
from streamchat.engine.async_engine import AsyncEngine
from streamchat.engine.factory import BuiltEngine, build_engine
from streamchat.models_file import ModelEntry

log = logging.getLogger(__name__)

Status = Literal["unloaded", "loading", "ready", "failed"]


def model_info(built: BuiltEngine) -> ModelInfo:
    return ModelInfo(
        built.name, built.max_model_len, built.tokenizer, int(time.time()), dict(built.sampling_defaults),
        built.grammars,
    )  # fmt: skip


@dataclass
class ModelSlot:
    entry: ModelEntry
    status: Status = "unloaded"
    engine: AsyncEngine | None = None
    info: ModelInfo | None = None
    error: str | None = None
    last_used: float = field(default_factory=time.monotonic)
    loader: asyncio.Task | None = None

    def use(self) -> tuple[AsyncEngine, ModelInfo]:
        """The model's engine for one request; 503 (starting the load if need be) until it is ready."""
        self.last_used = time.monotonic()
        if self.status == "ready" and self.engine is not None and self.info is not None and self.engine.alive:
            return self.engine, self.info
        if self.status == "failed":
            raise APIError(503, f"the model '{self.entry.name}' failed to load: {self.error}", code="model_load_failed")
        if self.status == "ready":  # its engine died
            raise APIError(503, f"the engine of model '{self.entry.name}' has stopped", code="engine_dead")
        self.start_loading()
        raise APIError(503, f"the model '{self.entry.name}' is loading; retry shortly", code="model_loading",
                       headers={"Retry-After": "5"})  # fmt: skip

    def start_loading(self) -> None:
        if self.status in ("unloaded",) and self.loader is None:
            self.status = "loading"
            self.loader = asyncio.create_task(self.load(), name=f"load-{self.entry.name}")

    async def load(self) -> None:
        self.status = "loading"
        try:
            built = await in_passing_thread(build_engine, self.entry.settings)
        except Exception as exc:
            log.exception("model %s failed to load", self.entry.name)
            self.status, self.error = "failed", str(exc)
            return
        finally:
            self.loader = None
        built.engine.start()
        self.engine, self.info, self.status = built.engine, model_info(built), "ready"
        self.last_used = time.monotonic()
        log.info("serving %s beside the default model", self.entry.name)

    def unload(self) -> None:
        if self.engine is not None:
            self.engine.stop()
        self.engine, self.info, self.status = None, None, "unloaded"
        log.info("unloaded %s after %.0f idle seconds", self.entry.name, self.entry.keep_alive or 0)

    @property
    def pending(self) -> int:
        return self.engine.num_pending if self.engine is not None else 0


class ExtraModels:
    def __init__(self, entries: list[ModelEntry]) -> None:
        self.slots = {e.name: ModelSlot(e) for e in entries}
        self._keeper: asyncio.Task | None = None

    def get(self, name: str) -> ModelSlot | None:
        return self.slots.get(name)

    async def start(self) -> None:
        """Load the models that are not lazy, one after another, and watch idle times."""
        self._keeper = asyncio.create_task(self._keep_alive())
        for slot in self.slots.values():
            if not slot.entry.lazy and slot.status == "unloaded":
                await slot.load()

    async def _keep_alive(self, every: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every)
            now = time.monotonic()
            for slot in self.slots.values():
                if slot.pending:
                    slot.last_used = now  # idle time counts from the last answer, not the last request
                elif slot.status == "ready" and slot.entry.keep_alive and now - slot.last_used > slot.entry.keep_alive:
                    slot.unload()

    async def stop(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        for slot in self.slots.values():
            if slot.loader is not None:
                slot.loader.cancel()
            if slot.engine is not None:
                slot.engine.stop()
