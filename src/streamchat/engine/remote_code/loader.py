"""Loading a model that ships its own code, and choosing how it is served.

With `--trust-remote-code`, the folder's classes are imported and the model loaded once; then:

- its `forward` takes transformers' `Cache` (checked by a two-token forward that must fill a
  `DynamicCache`): it is a causal LM like any other and goes to the batching engine;
- otherwise, if it offers `stream_chat` or `chat` (ChatGLM-6B/2/3): it answers through that, one
  request at a time (`engine.py`), after a one-token first question proves the call works;
- otherwise it cannot be served, and the error says why.

Failures of old code under transformers 5 are fixed where safe or named with their fix
(`compat.py`), never left as a bare traceback.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from streamchat.config import Settings
from streamchat.engine.model_files import resolve_model
from streamchat.engine.remote_code.chat_call import ChatCall, chat_call
from streamchat.engine.remote_code.compat import (
    RemoteCodeError,
    calling_post_init,
    described,
    with_generation_mixin,
)
from streamchat.engine.remote_code.conversation import ChatTurn
from streamchat.engine.remote_code.prompts import prompt_ids
from streamchat.engine.remote_code.shipped import ShippedCode, require_trust, shipped_code
from streamchat.engine.sampling_defaults import from_generation_config
from streamchat.engine.transformers.bf16_linear import convert_linears
from streamchat.engine.transformers.loader import (
    LoadedModel,
    _eos_ids,
    load_transformers,
    pick_device,
    pick_dtype,
    use_bf16_linears,
)
from streamchat.engine.types import SamplingParams

log = logging.getLogger(__name__)
T = TypeVar("T")

_MODEL_CLASSES = ("AutoModelForCausalLM", "AutoModel", "AutoModelForSeq2SeqLM")  # in order of preference
_CONTEXT_KEYS = ("seq_length", "max_sequence_length", "max_position_embeddings")  # ChatGLM2/3, ChatGLM-6B, others
_SMOKE_QUESTION = "你好"


@dataclass
class StreamChatModel:
    """A model served through its own stream_chat/chat, and what the server needs to know of it."""

    call: ChatCall
    tokenizer: Any
    name: str
    max_model_len: int
    sampling_defaults: dict[str, float]  # the model's own temperature and top_p


def load_remote_code(settings: Settings) -> LoadedModel | StreamChatModel | None:
    """The loaded model when `settings.model` ships code, None when it does not.

    Raises `RemoteCodeRefusedError` without `--trust-remote-code`, `RemoteCodeError` when the
    code cannot be served here.
    """
    code = shipped_code(settings.model)
    if code is None:
        return None
    require_trust(code, settings.trust_remote_code)
    from transformers import AutoConfig, AutoTokenizer
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    if settings.threads:
        torch.set_num_threads(settings.threads)
    folder = code.source
    name, _ = resolve_model(settings.model)
    device = pick_device(settings.device)
    dtype = pick_dtype(settings.dtype, device)
    ref = next((code.classes[k] for k in _MODEL_CLASSES if k in code.classes), None)
    if ref is None:  # only the configuration or the tokenizer is the folder's own; transformers has the model
        return _stage(
            code,
            "model",
            lambda: load_transformers(
                settings.model, settings.device, settings.dtype, settings.cache_dir, settings.max_model_len,
                settings.linear_dtype, trust_remote_code=True,
            ),
        )  # fmt: skip
    config = _stage(code, "configuration", lambda: AutoConfig.from_pretrained(folder, trust_remote_code=True))
    tokenizer = _stage(code, "tokenizer", lambda: AutoTokenizer.from_pretrained(folder, trust_remote_code=True))
    cls = with_generation_mixin(_stage(code, "model class", lambda: get_class_from_dynamic_module(ref, folder)))
    model = _load_weights(code, cls, config, dtype).to(device).eval()
    max_model_len = context_length(config, settings.max_model_len)
    problem = cache_problem(model)
    if problem is None:
        log.info("%s takes transformers' Cache: served by the batching engine", type(model).__name__)
        if use_bf16_linears(settings.linear_dtype, device, dtype):
            log.info("linear layers multiply in bfloat16 (%d layers)", convert_linears(model))
        defaults = from_generation_config(getattr(model, "generation_config", None))
        return LoadedModel(model, tokenizer, name, max_model_len, _eos_ids(model, tokenizer), defaults)
    call = _stage(code, "model", lambda: chat_call(model))
    if call is None:
        raise RemoteCodeError(
            f"{folder}: {type(model).__name__} can be served neither by the batching engine (a forward given "
            f"transformers' Cache did not use it: {problem}) nor through stream_chat (it has no stream_chat or "
            "chat method)"
        )
    method = "stream_chat" if call.streams else "chat"
    log.info("%s has no standard cache (%s): answering through its %s, one request at a time", name, problem, method)
    _first_question(code, call, tokenizer)
    model_defaults = from_generation_config(getattr(model, "generation_config", None))
    defaults = {k: v for k, v in model_defaults.items() if k in ("temperature", "top_p")}
    return StreamChatModel(call, tokenizer, name, max_model_len, defaults)


def context_length(config: Any, limit: int | None) -> int:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    native = next((int(v) for k in _CONTEXT_KEYS if isinstance(v := getattr(text, k, None), int)), 2048)
    return min(native, limit) if limit else native


def cache_problem(model: torch.nn.Module) -> str | None:
    """None when `model`'s forward fills a transformers `DynamicCache`; else what went wrong."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    cache = DynamicCache()
    keyword = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([[0, 1]], device=device), use_cache=True, **{keyword: cache})
    except Exception as exc:  # old code meets a Cache object; anything it raises is the answer
        return described(exc)
    if cache.get_seq_length() != 2:
        return "its forward left the cache it was given empty"
    return None


def _load_weights(code: ShippedCode, cls: type, config: Any, dtype: torch.dtype) -> torch.nn.Module:
    def load(model_class: type) -> torch.nn.Module:
        return model_class.from_pretrained(code.source, config=config, dtype=dtype)

    try:
        return load(cls)
    except AttributeError as exc:
        if "all_tied_weights_keys" not in str(exc):
            raise RemoteCodeError(f"{code.source}: the model failed to load: {described(exc)}") from exc
    log.info("%s.__init__ never calls post_init(), which transformers 5 requires: calling it after", cls.__name__)
    return _stage(code, "model", lambda: load(calling_post_init(cls)))


def _first_question(code: ShippedCode, call: ChatCall, tokenizer: Any) -> None:
    """Ask for one greedy token, so a call that cannot work fails at start, named, not on every request."""
    turn = ChatTurn(_SMOKE_QUESTION, ())
    max_length = len(prompt_ids(tokenizer, turn, call.style)) + 1
    responses = call.start(tokenizer, turn, SamplingParams(max_tokens=1, temperature=0.0), max_length)
    try:
        next(responses, None)
    except Exception as exc:
        method = "stream_chat" if call.streams else "chat"
        failure = described(exc)
        raise RemoteCodeError(f"{code.source}: the model's {method} failed on a first question: {failure}") from exc
    finally:
        close = getattr(responses, "close", None)
        if close is not None:
            close()


def _stage(code: ShippedCode, what: str, load: Callable[[], T]) -> T:
    try:
        return load()
    except RemoteCodeError:
        raise
    except Exception as exc:
        stage = "tokenizer" if what == "tokenizer" else ""
        raise RemoteCodeError(f"{code.source}: the {what} failed to load: {described(exc, stage)}") from exc
