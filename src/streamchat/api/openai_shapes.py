"""The OpenAI objects a chat or text completion is sent as: chunks while streaming, one object at the end.

A `Shape` knows one endpoint's envelope (`chat.completion.chunk` / `chat.completion`,
`text_completion`) and turns engine `Delta`s into it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from streamchat.api import tool_calls
from streamchat.engine.types import Delta, TokenLogprob, Usage


def usage(u: Usage) -> dict:
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens}


def _finish(d: Delta, called: bool = False) -> str | None:
    """OpenAI's finish_reason; an answer that ended after calling tools reports `tool_calls`."""
    if d.finish_reason is None:
        return None
    if d.finish_reason.value == "length":
        return "length"
    return "tool_calls" if called else "stop"


def _shows(d: Delta) -> bool:
    return bool(d.text or d.logprobs or d.finished)


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

    def chunks(self, d: Delta) -> list[dict]:
        """The chunks that carry `d` (none when it adds nothing a client would see)."""
        raise NotImplementedError

    def whole(self, text: str, last: Delta, logprobs: list[TokenLogprob]) -> dict:
        raise NotImplementedError


class ChatShape(Shape):
    """`reads_tool_calls`: the answer may hold `<tool_call>` blocks, sent as `tool_calls`."""

    def __init__(self, id: str, model: str, reads_tool_calls: bool = False) -> None:
        super().__init__(id, model, "chat.completion.chunk", "chat.completion")
        self._calls = tool_calls.ToolCallStream() if reads_tool_calls else None

    def opening(self) -> dict:
        return {
            **self.envelope(),
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
            ],
        }

    def chunks(self, d: Delta) -> list[dict]:
        if self._calls is None:
            return [self._chunk({"content": d.text} if d.text else {}, d.logprobs, _finish(d))] if _shows(d) else []
        deltas = self._calls.feed(d.text, d.finished)
        if d.logprobs and not deltas:
            deltas = [{}]
        out = [self._chunk(delta, d.logprobs if i == 0 else (), None) for i, delta in enumerate(deltas)]
        if d.finished:
            out.append(self._chunk({}, (), _finish(d, self._calls.called)))
        return out

    def _chunk(self, delta: dict, logprobs: tuple[TokenLogprob, ...], finish: str | None) -> dict:
        choice = {"index": 0, "delta": delta, "logprobs": _chat_logprobs(logprobs), "finish_reason": finish}
        return {**self.envelope(), "choices": [choice]}

    def whole(self, text: str, last: Delta, logprobs: list[TokenLogprob]) -> dict:
        message = tool_calls.message(text) if self._calls is not None else {"role": "assistant", "content": text}
        finish = _finish(last, "tool_calls" in message)
        choice = {"index": 0, "message": message, "logprobs": _chat_logprobs(logprobs), "finish_reason": finish}
        return {**self.envelope(whole=True), "choices": [choice], "usage": usage(last.usage)}


class CompletionShape(Shape):
    def __init__(self, id: str, model: str) -> None:
        super().__init__(id, model, "text_completion", "text_completion")

    def chunks(self, d: Delta) -> list[dict]:
        if not _shows(d):
            return []
        choice = {"index": 0, "text": d.text, "logprobs": _completion_logprobs(d.logprobs), "finish_reason": _finish(d)}
        return [{**self.envelope(), "choices": [choice]}]

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
