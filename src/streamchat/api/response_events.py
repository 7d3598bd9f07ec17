"""One response's answer as Responses API events, and its response object kept up to date.

Items are sent as they happen: a message item opens with the first text and is closed
(`output_text.done`, `content_part.done`, `output_item.done`) the moment a function call starts
or the answer ends; each function call is its own item, its arguments streamed as
`function_call_arguments.delta` and closed when the next call starts or the answer ends. Every
event carries `sequence_number`, which is also its place in the stream log, so a client that
re-attaches with `starting_after=N` gets exactly the events after N.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from streamchat.api import tool_calls
from streamchat.api.response_store import StoredResponse
from streamchat.engine.types import Delta, FinishReason, Usage
from streamchat.sse.framing import to_json
from streamchat.streams.log import StreamEvent


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def usage_object(u: Usage) -> dict[str, Any]:
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.total_tokens,
    }


class ResponseRun:
    """Reads one answer's deltas into events; `stored.body` always shows the response so far."""

    def __init__(self, stored: StoredResponse, reads_tool_calls: bool) -> None:
        self.stored = stored
        self.seq = 0
        self._calls = tool_calls.ToolCallStream() if reads_tool_calls else None
        self._message: dict[str, Any] | None = None  # the open message item
        self._call: dict[str, Any] | None = None  # the open function call item
        self._output: list[dict[str, Any]] = stored.body["output"]

    async def events(self, deltas: AsyncIterator[Delta]) -> AsyncIterator[StreamEvent]:
        self.stored.body["status"] = "in_progress"
        yield self._event("response.created", response=self.stored.body)
        yield self._event("response.in_progress", response=self.stored.body)
        last: Delta | None = None
        async for d in deltas:
            last = d
            for event in self._read(d):
                yield event
            if d.finished:
                break
        for event in self._close_items():
            yield event
        yield self._ending(last)

    def _read(self, d: Delta) -> list[StreamEvent]:
        if d.error:
            return []
        if self._calls is None:
            return self._text(d.text) if d.text else []
        out: list[StreamEvent] = []
        for piece in self._calls.feed(d.text, d.finished):
            if "content" in piece:
                out += self._text(piece["content"])
            for call in piece.get("tool_calls", []):
                out += self._call_piece(call)
        return out

    def _text(self, text: str) -> list[StreamEvent]:
        out = []
        if self._message is None:
            self._message = {"id": new_id("msg"), "type": "message", "status": "in_progress", "role": "assistant",
                             "content": []}  # fmt: skip
            self._output.append(self._message)
            out.append(self._event("response.output_item.added", output_index=len(self._output) - 1,
                                   item=self._message))  # fmt: skip
            self._message["content"].append({"type": "output_text", "text": "", "annotations": [], "logprobs": []})
            out.append(self._event("response.content_part.added", **self._where(self._message), content_index=0,
                                   part=self._message["content"][0]))  # fmt: skip
        self._message["content"][0]["text"] += text
        out.append(self._event("response.output_text.delta", **self._where(self._message), content_index=0,
                               delta=text, logprobs=[]))  # fmt: skip
        return out

    def _call_piece(self, call: dict[str, Any]) -> list[StreamEvent]:
        out = []
        if "id" in call:  # a new call: whatever was open is done
            out += self._close_items()
            self._call = {"id": new_id("fc"), "type": "function_call", "status": "in_progress", "arguments": "",
                          "call_id": call["id"], "name": call["function"]["name"]}  # fmt: skip
            self._output.append(self._call)
            out.append(self._event("response.output_item.added", output_index=len(self._output) - 1, item=self._call))
        fragment = call["function"].get("arguments", "")
        if fragment and self._call is not None:
            self._call["arguments"] += fragment
            out.append(self._event("response.function_call_arguments.delta", **self._where(self._call),
                                   delta=fragment))  # fmt: skip
        return out

    def _close_items(self) -> list[StreamEvent]:
        out = []
        if self._message is not None:
            item, self._message = self._message, None
            part = item["content"][0]
            where = self._where(item)
            out.append(self._event("response.output_text.done", **where, content_index=0, text=part["text"],
                                   logprobs=[]))  # fmt: skip
            out.append(self._event("response.content_part.done", **where, content_index=0, part=part))
            item["status"] = "completed"
            out.append(self._event("response.output_item.done", output_index=where["output_index"], item=item))
        if self._call is not None:
            item, self._call = self._call, None
            where = self._where(item)
            out.append(self._event("response.function_call_arguments.done", **where, name=item["name"],
                                   arguments=item["arguments"]))  # fmt: skip
            item["status"] = "completed"
            out.append(self._event("response.output_item.done", output_index=where["output_index"], item=item))
        return out

    def _ending(self, last: Delta | None) -> StreamEvent:
        body = self.stored.body
        if last is not None and last.usage is not None:
            body["usage"] = usage_object(last.usage)
        self.stored.conversation.append(self._assistant_turn())
        reason = last.finish_reason if last is not None else FinishReason.ERROR
        if reason is FinishReason.ERROR or (last is not None and last.error):
            message = last.error if last is not None and last.error else "no output"
            body["status"] = "failed"
            body["error"] = {"code": "server_error", "message": f"generation failed: {message}"}
            return self._event("response.failed", response=body)
        body["completed_at"] = int(time.time())
        if reason is FinishReason.ABORT:
            body["status"] = "cancelled"
            return self._event("response.incomplete", response=body)
        if reason is FinishReason.LENGTH:
            body["status"] = "incomplete"
            body["incomplete_details"] = {"reason": "max_output_tokens"}
            return self._event("response.incomplete", response=body)
        body["status"] = "completed"
        return self._event("response.completed", response=body)

    def _assistant_turn(self) -> dict[str, Any]:
        """This answer as a chat message, for a later `previous_response_id`."""
        text = "".join(p["text"] for item in self._output if item["type"] == "message" for p in item["content"])
        calls = [
            {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            for item in self._output
            if item["type"] == "function_call"
        ]
        return {"role": "assistant", "content": text or None, **({"tool_calls": calls} if calls else {})}

    def _where(self, item: dict[str, Any]) -> dict[str, Any]:
        return {"item_id": item["id"], "output_index": self._output.index(item)}

    def _event(self, kind: str, **fields: Any) -> StreamEvent:
        event = StreamEvent(kind, to_json({"type": kind, **fields, "sequence_number": self.seq}))
        self.seq += 1
        return event
