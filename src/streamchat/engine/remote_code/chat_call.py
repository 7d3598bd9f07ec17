"""Calling a model's own `stream_chat` (or `chat`) with a request's settings, and what it honours.

ChatGLM-6B/2/3 all take `(tokenizer, query, history, max_length=…, do_sample=…, top_p=…,
temperature=…)`; `max_length` counts prompt and answer together, as the seed's routes do.
stream_chat yields the whole answer so far, alone or as `(response, history)` (with
`past_key_values` too when asked); `chat` returns `(response, history)` once, so a model that
only has `chat` answers in one piece and cannot be stopped mid-answer.

Of a request's settings, `temperature` (0 means greedy: `do_sample=False`), `top_p` and the answer
length reach the model; `seed` seeds torch's generator, which stream_chat samples from, on the
engine thread that runs one answer at a time; stop strings are applied to the text here. Any
other setting the request sets away from its neutral value is refused (400 naming it), never
dropped in silence.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import torch

from streamchat.engine.async_engine import RequestNotSupportedError
from streamchat.engine.remote_code.conversation import ChatTurn, HistoryStyle
from streamchat.engine.types import GenerationRequest, SamplingParams

_PASSED = ("max_length", "do_sample", "top_p", "temperature")
HONOURED = frozenset({"max_tokens", "temperature", "top_p", "seed", "stop"})
_NEUTRAL = SamplingParams()


class ChatCallError(TypeError):
    """The model's stream_chat/chat does not take what every ChatGLM takes."""


def refuse_unhonoured(request: GenerationRequest) -> None:
    """RequestNotSupportedError naming the first setting this engine would have to ignore."""
    if getattr(request, "output_token_ids", ()):
        raise RequestNotSupportedError(
            "this model answers through its own stream_chat, which cannot continue an answer begun elsewhere",
            "output_token_ids",
        )
    if getattr(request, "constraint", None) is not None:
        raise RequestNotSupportedError(
            "this model answers through its own stream_chat, which cannot follow a grammar", "response_format"
        )
    for f in fields(SamplingParams):
        if f.name not in HONOURED and getattr(request.params, f.name) != getattr(_NEUTRAL, f.name):
            raise RequestNotSupportedError(
                f"'{f.name}' cannot be honoured: this model answers through its own stream_chat, which takes "
                "temperature, top_p and the answer length (seed and stop strings are applied around it)",
                f.name,
            )


def honoured_defaults(defaults: dict[str, float]) -> dict[str, float]:
    """The operator's --sampling-defaults, refused at start when they name what stream_chat ignores."""
    ignored = sorted(set(defaults) - HONOURED)
    if ignored:
        raise ValueError(
            f"--sampling-defaults sets {', '.join(ignored)}, which this model's own stream_chat cannot honour "
            "(it takes temperature and top_p)"
        )
    return defaults


@dataclass(frozen=True)
class ChatCall:
    """How to ask this model: which method, whether it streams, how its history looks."""

    method: Callable[..., Any]
    streams: bool  # stream_chat (yields) rather than chat (returns once)
    style: HistoryStyle

    def start(self, tokenizer: Any, turn: ChatTurn, params: SamplingParams, max_length: int) -> Iterator[Any]:
        """The model's own iterator of whole responses (closing it stops the model's loop)."""
        kwargs: dict[str, Any] = {"max_length": max_length, "do_sample": not params.greedy}
        if not params.greedy:
            kwargs.update(temperature=params.temperature, top_p=params.top_p)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        if self.streams:
            return self.method(tokenizer, turn.query, turn.history_for_call(), **kwargs)
        return self._once(tokenizer, turn, kwargs)

    def _once(self, tokenizer: Any, turn: ChatTurn, kwargs: dict[str, Any]) -> Iterator[Any]:
        yield self.method(tokenizer, turn.query, turn.history_for_call(), **kwargs)


def response_text(item: Any) -> str:
    """The response in what stream_chat yields: a string, or a tuple that starts with one."""
    return item[0] if isinstance(item, tuple | list) else item


def chat_call(model: torch.nn.Module) -> ChatCall | None:
    """How to ask `model`, or None when it has neither stream_chat nor chat."""
    for name, streams in (("stream_chat", True), ("chat", False)):
        method = getattr(model, name, None)
        if callable(method):
            params = inspect.signature(method).parameters
            if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
                missing = [p for p in _PASSED if p not in params]
                if missing:
                    raise ChatCallError(f"{type(model).__name__}.{name} takes no {', '.join(missing)}")
            style = HistoryStyle.MESSAGES if "role" in params else HistoryStyle.PAIRS
            return ChatCall(method, streams, style)
    return None
