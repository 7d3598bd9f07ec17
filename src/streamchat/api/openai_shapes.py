"""The OpenAI objects a chat or text completion is sent as: chunks while streaming, one object at the end.

A `Shape` knows one endpoint's envelope (`chat.completion.chunk` / `chat.completion`,
`text_completion`) and turns engine `Delta`s into it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from streamchat.engine.types import Delta, TokenLogprob, Usage


def usage(u: Usage) -> dict:
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens}


def _finish(d: Delta) -> str | None:
    if d.finish_reason is None:
        return None
    return d.finish_reason.value if d.finish_reason.value in ("stop", "length") else "stop"


@dataclass
class Shape:
    id: str
    model: str
    object_chunk: str
    object_whole: str
    created: int = field(default_factory=lambda: int(time.time()))

    def envelope(self, whole: bool = False) -> dict:
        obj = self.object_whole if whole else self.object_chunk
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "system_fingerprint": None}

    def opening(self) -> dict | None:
        return None

    def chunk(self, d: Delta) -> dict:
        raise NotImplementedError

    def whole(self, text: str, last: Delta, logprobs: list[TokenLogprob]) -> dict:
        raise NotImplementedError


class ChatShape(Shape):
    def __init__(self, id: str, model: str) -> None:
        super().__init__(id, model, "chat.completion.chunk", "chat.completion")

    def opening(self) -> dict:
        return {
            **self.envelope(),
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
            ],
        }

    def chunk(self, d: Delta) -> dict:
        delta = {"content": d.text} if d.text else {}
        choice = {"index": 0, "delta": delta, "logprobs": _chat_logprobs(d.logprobs), "finish_reason": _finish(d)}
        return {**self.envelope(), "choices": [choice]}

    def whole(self, text: str, last: Delta, logprobs: list[TokenLogprob]) -> dict:
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "logprobs": _chat_logprobs(logprobs), "finish_reason": _finish(last)}
        return {**self.envelope(whole=True), "choices": [choice], "usage": usage(last.usage)}


class CompletionShape(Shape):
    def __init__(self, id: str, model: str) -> None:
        super().__init__(id, model, "text_completion", "text_completion")

    def chunk(self, d: Delta) -> dict:
        choice = {"index": 0, "text": d.text, "logprobs": _completion_logprobs(d.logprobs), "finish_reason": _finish(d)}
        return {**self.envelope(), "choices": [choice]}

    def whole(self, text: str, last: Delta, logprobs: list[TokenLogprob]) -> dict:
        choice = {"index": 0, "text": text, "logprobs": _completion_logprobs(logprobs), "finish_reason": _finish(last)}
        return {**self.envelope(whole=True), "choices": [choice], "usage": usage(last.usage)}


def _chat_logprobs(items: tuple[TokenLogprob, ...] | list[TokenLogprob]) -> dict | None:
    if not items:
        return None
    return {
        "content": [
            {
                "token": t.token,
                "logprob": t.logprob,
                "bytes": t.bytes,
                "top_logprobs": [{"token": s, "logprob": lp, "bytes": b} for s, lp, b in t.top],
            }
            for t in items
        ]
    }


def _completion_logprobs(items: tuple[TokenLogprob, ...] | list[TokenLogprob]) -> dict | None:
    if not items:
        return None
    return {
        "tokens": [t.token for t in items],
        "token_logprobs": [t.logprob for t in items],
        "top_logprobs": [{s: lp for s, lp, _ in t.top} for t in items],
    }
