"""Building a ready engine from settings: pick the backend, load the model, size the cache."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from streamchat.config import Settings
from streamchat.engine.async_engine import AsyncEngine
from streamchat.engine.llm_engine import LLMEngine
from streamchat.engine.loader import load_transformers
from streamchat.engine.transformers_runner import TransformersRunner

log = logging.getLogger(__name__)

_CACHE_SHARE_OF_FREE_MEMORY = 0.3


@dataclass
class BuiltEngine:
    engine: AsyncEngine
    name: str
    max_model_len: int
    tokenizer: object


def build_engine(settings: Settings) -> BuiltEngine:
    if settings.threads:
        torch.set_num_threads(settings.threads)
    loaded = load_transformers(
        settings.model, settings.device, settings.dtype, settings.cache_dir, settings.max_model_len
    )
    runner = TransformersRunner(loaded.model)
    cache_tokens = settings.cache_tokens or default_cache_tokens(
        runner.cache.bytes_per_token, runner.device, settings.max_num_seqs * loaded.max_model_len
    )
    cache_tokens = max(cache_tokens, loaded.max_model_len)
    log.info("KV cache budget: %d tokens (%.0f MiB)", cache_tokens, cache_tokens * runner.cache.bytes_per_token / 2**20)
    core = LLMEngine(
        runner,
        loaded.tokenizer,
        loaded.eos_token_ids,
        loaded.max_model_len,
        settings.max_num_seqs,
        cache_tokens,
        settings.prefill_chunk,
        settings.seed,
    )
    name = settings.served_model_name or loaded.name
    return BuiltEngine(AsyncEngine(core), name, loaded.max_model_len, loaded.tokenizer)


def default_cache_tokens(bytes_per_token: int, device: torch.device, ceiling: int) -> int:
    """A share of the memory free now, never more than every sequence at full length needs."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        free = _available_ram()
    return max(1, min(ceiling, int(free * _CACHE_SHARE_OF_FREE_MEMORY) // bytes_per_token))


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
