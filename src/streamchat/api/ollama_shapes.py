"""The objects Ollama's `/api/chat` and `/api/generate` answer with, built from a request's deltas.

Streamed, each delta that adds text becomes one object `{"model", "created_at", "message":
{"role": "assistant", "content"}, "done": false}` (`"response"` instead of `"message"` for
generate); the last one says `"done": true`, why (`done_reason`) and the counts and durations
(nanoseconds) that Ollama reports. Not streamed, the same objects are merged into one, so both
ways give the same answer.

Tool calls: Ollama sends a call whole, once complete (since 0.8). The answer text holds
`<tool_call>` blocks (`tools.py`); text is sent as it comes up to a possible opening marker, and
each call is sent in one object once its arguments are complete, as
`{"id", "function": {"index", "name", "arguments": {…}}}`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streamchat.api.tool_calls import new_call_id, read
from streamchat.engine.types import Delta, GenerationRequest, TokenLogprob


def created_at() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _ns(seconds: float) -> int:
    return max(int(seconds * 1e9), 0)


@dataclass
class HeldCalls:
    """Splits the growing answer into text to send now and tool calls complete enough to send."""

    text: str = ""
    sent_content: int = 0
    sent_calls: int = 0

    def feed(self, piece: str, final: bool) -> tuple[str, list[dict[str, Any]]]:
        self.text += piece
        answer = read(self.text, final)
        content = answer.content[self.sent_content :]
        self.sent_content = max(self.sent_content, len(answer.content))
        calls = []
        for call in answer.calls[self.sent_calls :]:
            if not (call.complete or final):
                break
            try:
                arguments = json.loads(call.arguments)
            except json.JSONDecodeError:
                break  # cut short by the length limit: no call was made
            function = {"index": self.sent_calls, "name": call.name, "arguments": arguments}
            calls.append({"id": new_call_id(), "function": function})
            self.sent_calls += 1
        return content, calls


@dataclass
class Answer:
    """One request's answer in Ollama's shapes; `chat` picks `/api/chat`'s over `/api/generate`'s."""

    model: str  # the name as the client sent it, as Ollama echoes it
    chat: bool
    request: GenerationRequest
    started: float  # time.monotonic() when the request arrived
    reads_tool_calls: bool = False
    logprobs: bool = False
    first_token_at: float | None = None
    held: HeldCalls = field(default_factory=HeldCalls)

    def chunk(self, d: Delta) -> dict[str, Any] | None:
        """The object to stream for `d`, or None when it adds nothing yet."""
        now = time.monotonic()
        if d.token_ids and self.first_token_at is None:
            self.first_token_at = now
        content, calls = self.held.feed(d.text, d.finished) if self.reads_tool_calls else (d.text, [])
        obj: dict[str, Any] = {"model": self.model, "created_at": created_at(), **self._body(content, calls)}
        obj["done"] = d.finished
        if self.logprobs and d.logprobs:
            obj["logprobs"] = [_logprob(t) for t in d.logprobs]
        if d.finished:
            obj.update(self._stats(d, now))
        elif not (content or calls or "logprobs" in obj):
            return None
        return obj

    def whole(self, chunks: list[dict[str, Any]]) -> dict[str, Any]:
        """The streamed objects merged into the one a request with `"stream": false` gets."""
        last = chunks[-1]
        text = "".join(c["message"]["content"] if self.chat else c["response"] for c in chunks)
        calls = [call for c in chunks if self.chat for call in c["message"].get("tool_calls", ())]
        out = {"model": last["model"], "created_at": last["created_at"], **self._body(text, calls)}
        out.update((k, v) for k, v in last.items() if k not in ("model", "created_at", "message", "response"))
        if self.logprobs:
            out["logprobs"] = [lp for c in chunks for lp in c.get("logprobs", ())]
        return out

    def _body(self, content: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
        if not self.chat:
            return {"response": content}
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if calls:
            message["tool_calls"] = calls
        return {"message": message}

    def _stats(self, d: Delta, now: float) -> dict[str, Any]:
        usage = d.usage
        queued = usage.queue_time if usage is not None and usage.queue_time is not None else 0.0
        scheduled = self.request.arrival_time + queued
        first = self.first_token_at if self.first_token_at is not None else now
        return {
            "done_reason": d.finish_reason.value if d.finish_reason is not None else "stop",
            "total_duration": _ns(now - self.started),
            "load_duration": 0,  # the model is loaded before the server takes requests
            "prompt_eval_count": usage.prompt_tokens if usage is not None else len(self.request.prompt_token_ids),
            "prompt_eval_duration": _ns(first - scheduled),
            "eval_count": usage.completion_tokens if usage is not None else 0,
            "eval_duration": _ns(now - first),
        }


def _logprob(t: TokenLogprob) -> dict[str, Any]:
    top = [{"token": token, "logprob": logprob, "bytes": list(raw)} for token, logprob, raw in t.top]
    out: dict[str, Any] = {"token": t.token, "logprob": t.logprob, "bytes": list(t.bytes)}
    if top:
        out["top_logprobs"] = top
    return out


def loaded(model: str, chat: bool) -> dict[str, Any]:
    """Ollama's answer to a request with nothing to answer (no messages, an empty prompt): the model is loaded."""
    body = {"message": {"role": "assistant", "content": ""}} if chat else {"response": ""}
    return {"model": model, "created_at": created_at(), **body, "done": True, "done_reason": "load"}
