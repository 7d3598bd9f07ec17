"""Building a ready engine from settings: pick the backend, load the model, size the cache."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from streamchat.config import Settings
from streamchat.engine.async_engine import AsyncEngine
from streamchat.engine.contracts import Runner
from streamchat.engine.grammar.compiler import GrammarCompiler
from streamchat.engine.llm_engine import LLMEngine
from streamchat.engine.memory import (
    DEFAULT_CONTEXT,
    cache_budget,
    cells_per_sequence,
    default_cache_tokens,
    even_share,
)
from streamchat.engine.model_files import gguf_path
from streamchat.engine.sampling_defaults import merged, parse
from streamchat.engine.speculation import PromptLookup

if TYPE_CHECKING:
    from streamchat.engine.llamacpp.loader import LoadedGGUF
    from streamchat.engine.llamacpp.runner import LlamaCppRunner
    from streamchat.engine.remote_code.loader import StreamChatModel
    from streamchat.engine.transformers.loader import LoadedModel

log = logging.getLogger(__name__)


@dataclass
class BuiltEngine:
    engine: AsyncEngine
    name: str
    max_model_len: int
    tokenizer: object
    sampling_defaults: dict[str, float] = field(default_factory=dict)  # for settings a request leaves unset
    grammars: GrammarCompiler | None = None  # compiles the grammars of structured outputs and tool calls


def build_engine(settings: Settings) -> BuiltEngine:
    backend = choose_backend(settings)
    log.info("engine backend: %s", backend)
    remote = None
    if backend == "transformers":
        from streamchat.engine.remote_code.loader import StreamChatModel, load_remote_code

        remote = load_remote_code(settings)  # None unless the model folder ships code; refused without the flag
        if isinstance(remote, StreamChatModel):
            return _stream_chat_engine(remote, settings)
    llm, loaded = _transformers_engine(settings, remote) if remote is not None else _BACKENDS[backend](settings)
    name = settings.served_model_name or loaded.name
    defaults = merged(loaded.sampling_defaults, not settings.model, parse(settings.sampling_defaults))
    log.info("sampling defaults for requests that leave them unset: %s", defaults or "none")
    grammars = GrammarCompiler(loaded.tokenizer, llm.eos_token_ids)
    return BuiltEngine(AsyncEngine(llm), name, loaded.max_model_len, loaded.tokenizer, defaults, grammars)


def _stream_chat_engine(model: StreamChatModel, settings: Settings) -> BuiltEngine:
    """A model that answers through its own stream_chat, one request at a time (engine/remote_code/)."""
    from streamchat.engine.remote_code.chat_call import honoured_defaults
    from streamchat.engine.remote_code.engine import serving

    engine, tokenizer = serving(model)
    defaults = {**model.sampling_defaults, **honoured_defaults(parse(settings.sampling_defaults))}
    log.info("sampling defaults for requests that leave them unset: %s", defaults or "none")
    name = settings.served_model_name or model.name
    return BuiltEngine(engine, name, model.max_model_len, tokenizer, defaults)


def choose_backend(settings: Settings) -> str:
    """`auto`: llama.cpp for a local GGUF (the embedded default included) when it is installed."""
    if settings.engine != "auto":
        return settings.engine
    if settings.device != "cuda" and gguf_path(settings.model) is not None and llama_cpp_available():
        return "llamacpp"
    return "transformers"


def llama_cpp_available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except (ImportError, OSError):  # not installed, or its shared library cannot load
        return False
    return True


_Built = tuple[LLMEngine, "LoadedModel | LoadedGGUF"]  # the engine, and what its loader read


def _transformers_engine(settings: Settings, loaded: LoadedModel | None = None) -> _Built:
    """`loaded`: a model that ships its own code, already loaded (engine/remote_code/loader.py)."""
    from streamchat.engine.transformers.runner import TransformersRunner

    if loaded is None:
        loaded = _load_transformers(settings)
    runner = TransformersRunner(loaded.model)
    ceiling = settings.max_num_seqs * loaded.max_model_len
    cache_tokens = cache_budget(
        settings.cache_tokens, runner.cache.bytes_per_token, runner.device, ceiling, loaded.max_model_len
    )
    runner.cache.limit(settings.max_num_seqs, cache_tokens)
    return _built(runner, loaded, settings, cache_tokens)


def _load_transformers(settings: Settings) -> LoadedModel:
    from streamchat.engine.remote_code.shipped import refused_by_transformers
    from streamchat.engine.transformers.loader import load_transformers

    if settings.threads:
        torch.set_num_threads(settings.threads)
    try:
        return load_transformers(
            settings.model,
            settings.device,
            settings.dtype,
            settings.cache_dir,
            settings.max_model_len,
            settings.linear_dtype,
            settings.trust_remote_code,
        )
    except ValueError as exc:  # transformers refusing a hub model's code: say which flag allows it
        refused = refused_by_transformers(settings.model, exc)
        if refused is None:
            raise
        raise refused from exc


def _llamacpp_engine(settings: Settings) -> _Built:
    """One KV stream per row and per parked prefix, each as long as the longest request.

    The streams are address space: a cell's memory is resident only while a sequence holds it
    (llamacpp/pages.py), so the default per-sequence context is min(native, 2048) (--max-model-len
    sets it) and the budget in tokens (--cache-tokens, default a share of free memory) is a ceiling
    the scheduler keeps the rows under, preempting when it is reached; parked prefixes get a quarter
    of it at most. Where the cells cannot be handed back, every stream stays resident and is sized
    to an even share of --cache-tokens, as the budget is then what they take.
    """
    if not llama_cpp_available():
        raise RuntimeError("engine=llamacpp needs llama-cpp-python (pip install 'llama-cpp-python>=0.3.8,<0.4')")
    from streamchat.engine.llamacpp.loader import load_gguf
    from streamchat.engine.llamacpp.prefixes import PARK_SLOTS
    from streamchat.engine.llamacpp.runner import LLAMA_MAX_SEQ

    loaded = load_gguf(settings.model, settings.cache_dir, settings.max_model_len, settings.log_level == "debug")
    # no more parked chats than rows (4 at least), within llama.cpp's sequence ids
    fits = min(PARK_SLOTS, max(4, settings.max_num_seqs), LLAMA_MAX_SEQ - settings.max_num_seqs)
    park_slots = max(0, fits) if settings.prefix_reuse else 0
    n_seq_ids = settings.max_num_seqs + park_slots
    longest = loaded.max_model_len  # the model's native context, or --max-model-len when lower
    context = longest if settings.max_model_len else min(longest, DEFAULT_CONTEXT)
    bytes_per_token = loaded.model.kv_bytes_per_token
    ram_tokens = default_cache_tokens(bytes_per_token, torch.device("cpu"), n_seq_ids * context)
    per_seq = cells_per_sequence(n_seq_ids, context, settings.cache_tokens, ram_tokens)
    budget = cache_budget(settings.cache_tokens, bytes_per_token, torch.device("cpu"), n_seq_ids * per_seq, per_seq)
    park_tokens = min(park_slots * per_seq, budget // 4)
    runner = _llamacpp_runner(loaded, settings, per_seq, park_slots, park_tokens)
    if not runner.pages_released and settings.cache_tokens is not None:
        runner.close()
        per_seq = even_share(n_seq_ids, longest, settings.cache_tokens)
        runner = _llamacpp_runner(loaded, settings, per_seq, park_slots, None)
    loaded.max_model_len = min(per_seq, runner.n_ctx_seq)
    log.info("max_model_len %d (one KV stream each for %d sequence ids)", loaded.max_model_len, n_seq_ids)
    # where every cell is resident anyway, every row may run at full length: never preempt
    full = settings.max_num_seqs * loaded.max_model_len
    cache_tokens = budget - park_tokens if runner.pages_released else full
    llm, loaded = _built(runner, loaded, settings, cache_tokens, padded_cache=False)
    llm.speculation = PromptLookup(
        settings.spec_tokens, settings.spec_max_running, loaded.max_model_len, pads_lone_row=runner.pads_lone_row
    )
    return llm, loaded


def _llamacpp_runner(
    loaded: LoadedGGUF, settings: Settings, per_seq: int, park_slots: int, park_tokens: int | None
) -> LlamaCppRunner:
    from streamchat.engine.llamacpp.runner import LlamaCppRunner

    return LlamaCppRunner(
        loaded.model,
        n_ctx_seq=per_seq,
        max_num_seqs=settings.max_num_seqs,
        max_batch_tokens=settings.prefill_chunk + settings.max_num_seqs,
        threads=settings.threads,
        park_slots=park_slots,
        park_tokens=park_tokens,
        batch_invariant=settings.batch_invariant,
    )


def _built(runner: Runner, loaded, settings: Settings, cache_tokens: int, padded_cache: bool = True) -> _Built:
    """The engine around a runner; both backends' loaders give name, tokenizer, EOS ids and context."""
    llm = LLMEngine(
        runner,
        loaded.tokenizer,
        loaded.eos_token_ids,
        loaded.max_model_len,
        settings.max_num_seqs,
        cache_tokens,
        settings.prefill_chunk,
        settings.seed,
        padded_cache,
    )
    return llm, loaded


_BACKENDS: dict[str, Callable[[Settings], _Built]] = {
    "transformers": _transformers_engine,
    "llamacpp": _llamacpp_engine,
}
