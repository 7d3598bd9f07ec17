"""The Anthropic objects an answer is sent as: one `message` at the end, or the stream's typed events.

A stream is `message_start` (the message with empty content and the prompt's `input_tokens`),
`ping`, then for each content block `content_block_start`, its `content_block_delta`s (`text_delta`
for text, `input_json_delta` carrying a `tool_use` block's input JSON as it is generated) and
`content_block_stop`, then `message_delta` (`stop_reason`, `stop_sequence`, `usage`) and
`message_stop`; a stream cut short ends with `error` (`closing`). A text block opens only when
there is text, as Anthropic's do: a forced tool call starts with its `tool_use` block.

`stop_reason`: `max_tokens` when the length limit cut the answer, `tool_use` when it called tools,
`stop_sequence` when one of the request's stop sequences ended it, else `end_turn`. The engine
says only "stop" for a stop string; the tokens that spelled it were generated (the text leaves it
out), so decoding them finds which one, at the earliest place, as the engine's matcher cut.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from streamchat.api import tool_calls
from streamchat.api.errors import anthropic_error_body
from streamchat.engine.contracts import Tokenizer
from streamchat.engine.types import Delta, FinishReason
from streamchat.sse.framing import to_json
from streamchat.streams.log import StreamEvent
from streamchat.streams.manager import SHUTDOWN, Ending


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def error_event(status: int, message: str) -> StreamEvent:
    """Anthropic's `event: error`: `{"type": "error", "error": {"type": ..., "message": ...}}`."""
    return StreamEvent("error", to_json(anthropic_error_body(status, message)))


def closing(ending: Ending | None) -> list[StreamEvent]:
    """How a stream cut short ends (cancelled, abandoned, server shutdown): Anthropic's error event
    naming why, and no `data: [DONE]`, which Anthropic never sends and its SDK would try to parse."""
    if ending is None:
        return []
    return [error_event(503 if ending == SHUTDOWN else 500, f"{ending.message} ({ending.code})")]


def matched_stop(tokenizer: Tokenizer, token_ids: list[int], stops: tuple[str, ...]) -> str | None:
    """The stop sequence that ended an answer, if one did (see the module docstring)."""
    if not stops:
        return None
    text = tokenizer.decode(token_ids, skip_special_tokens=True)
    found = [(text.find(s), len(s), i) for i, s in enumerate(stops) if s in text]
    return stops[min(found)[2]] if found else None


def _event(name: str, **fields: object) -> StreamEvent:
    return StreamEvent(name, to_json({"type": name, **fields}))


@dataclass
class MessageShape:
    """One answer's envelope and how its end is reported."""

    id: str
    model: str
    input_tokens: int
    reads_tool_calls: bool  # the answer may hold `<tool_call>` blocks, sent as `tool_use` blocks
    stops: tuple[str, ...]
    tokenizer: Tokenizer

    def message(self, content: list[dict], stop: tuple[str | None, str | None], output_tokens: int) -> dict:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop[0],
            "stop_sequence": stop[1],
            "usage": {"input_tokens": self.input_tokens, "output_tokens": output_tokens},
        }

    def stop(self, last: Delta, token_ids: list[int], called: bool) -> tuple[str, str | None]:
        """`(stop_reason, stop_sequence)` of an answer whose last delta is `last`."""
        if last.finish_reason == FinishReason.LENGTH:
            return "max_tokens", None
        if called:
            return "tool_use", None
        sequence = matched_stop(self.tokenizer, token_ids, self.stops)
        return ("stop_sequence", sequence) if sequence is not None else ("end_turn", None)

    def whole(self, text: str, last: Delta, token_ids: list[int]) -> dict:
        """The non-streamed message. A call the length limit cut short is left out: it cannot run."""
        content: list[dict] = []
        calls: list[tool_calls.ReadCall] = []
        if self.reads_tool_calls:
            answer = tool_calls.read(text, final=True)
            text, calls = answer.content, [c for c in answer.calls if c.complete]
        if text:
            content.append({"type": "text", "text": text})
        for call in calls:
            content.append(
                {"type": "tool_use", "id": new_id("toolu"), "name": call.name, "input": json.loads(call.arguments)}
            )
        output = last.usage.completion_tokens if last.usage is not None else len(token_ids)
        return self.message(content, self.stop(last, token_ids, bool(calls)), output)


@dataclass
class MessageEvents:
    """Turns an answer's deltas into the stream's events, sending each piece once."""

    shape: MessageShape
    calls: tool_calls.ToolCallStream | None = None
    token_ids: list[int] = field(default_factory=list)
    index: int = -1  # the block open now (or last closed)
    open: str | None = None  # its type while it is open
    called: bool = False

    def __post_init__(self) -> None:
        if self.shape.reads_tool_calls:
            self.calls = tool_calls.ToolCallStream()

    def opening(self) -> list[StreamEvent]:
        message = self.shape.message([], (None, None), 0)
        return [_event("message_start", message=message), _event("ping")]

    def feed(self, d: Delta) -> list[StreamEvent]:
        self.token_ids.extend(d.token_ids)
        if self.calls is None:
            pieces = [{"content": d.text}] if d.text else []
        else:
            pieces = self.calls.feed(d.text, d.finished)
        out: list[StreamEvent] = []
        for piece in pieces:
            out.extend(self._piece(piece))
        if d.finished:
            out.extend(self._close())
            stop_reason, sequence = self.shape.stop(d, self.token_ids, self.called)
            output = d.usage.completion_tokens if d.usage is not None else len(self.token_ids)
            usage = {"input_tokens": self.shape.input_tokens, "output_tokens": output}
            delta = {"stop_reason": stop_reason, "stop_sequence": sequence}
            out += [_event("message_delta", delta=delta, usage=usage), _event("message_stop")]
        return out

    def _piece(self, piece: dict) -> list[StreamEvent]:
        """Events for one OpenAI-style delta: text, a call's first chunk, or its argument fragment."""
        if "content" in piece:
            out = [] if self.open == "text" else self._begin({"type": "text", "text": ""})
            delta = {"type": "text_delta", "text": piece["content"]}
            return [*out, _event("content_block_delta", index=self.index, delta=delta)]
        (call,) = piece["tool_calls"]
        function = call["function"]
        out = []
        if "name" in function:  # a call's first chunk: a new tool_use block
            self.called = True
            out = self._begin({"type": "tool_use", "id": new_id("toolu"), "name": function["name"], "input": {}})
        if function.get("arguments"):
            delta = {"type": "input_json_delta", "partial_json": function["arguments"]}
            out.append(_event("content_block_delta", index=self.index, delta=delta))
        return out

    def _begin(self, block: dict) -> list[StreamEvent]:
        out = self._close()
        self.index += 1
        self.open = block["type"]
        return [*out, _event("content_block_start", index=self.index, content_block=block)]

    def _close(self) -> list[StreamEvent]:
        if self.open is None:
            return []
        self.open = None
        return [_event("content_block_stop", index=self.index)]
