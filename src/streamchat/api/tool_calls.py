"""Answer text with `<tool_call>` blocks, read back as OpenAI's `content` and `tool_calls`.

The grammar (`tools.py`) guarantees each block is `<tool_call>\\n{"name": ..., "arguments": ...}
\\n</tool_call>`, so reading is exact. While streaming, the text so far is read again at every
delta (answers are short) and only what is new is sent: content up to a possible opening marker
(held back until it is ruled out), then for each call a first chunk with its `index`, `id`,
`type` and `function.name`, then its `arguments` as they grow, up to the end of the JSON value.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field

from streamchat.api.tools import CALL_CLOSE, CALL_OPEN

_HEAD = re.compile(r'\s*\{\s*"name"\s*:\s*"([a-zA-Z0-9_-]+)"\s*,\s*"arguments"\s*:\s*')


@dataclass
class ReadCall:
    name: str
    arguments: str  # the JSON text of the arguments so far
    complete: bool


@dataclass
class ReadAnswer:
    content: str
    calls: list[ReadCall]


def read(text: str, final: bool) -> ReadAnswer:
    """Content and calls in `text`; unless `final`, content that may begin a marker is held back."""
    start = text.find(CALL_OPEN)
    if start < 0:
        return ReadAnswer(text if final else _without_marker_prefix(text), [])
    calls = []
    while start >= 0:
        head = _HEAD.match(text, start + len(CALL_OPEN))
        if head is None:
            break  # the name is not complete yet
        end = json_value_end(text, head.end())
        calls.append(ReadCall(head.group(1), text[head.end() : end], end < len(text)))
        start = text.find(CALL_OPEN, text.find(CALL_CLOSE, end) if end < len(text) else len(text))
    return ReadAnswer(text[: text.find(CALL_OPEN)], calls)


def _without_marker_prefix(text: str) -> str:
    for n in range(min(len(CALL_OPEN) - 1, len(text)), 0, -1):
        if CALL_OPEN.startswith(text[-n:]):
            return text[:-n]
    return text


def json_value_end(text: str, start: int) -> int:
    """Where the JSON value starting at `start` ends (len(text) if it has not ended yet)."""
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if depth == 0 and not in_string and i > start and text[start] not in '"{[' and ch in ",}] \n":
            return i  # a bare number, true, false or null ends here
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
                if depth == 0:
                    return i + 1
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class ToolCallStream:
    """Turns the growing answer into chat-chunk deltas, sending each piece once."""

    text: str = ""
    sent_content: int = 0
    sent_arguments: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)

    def feed(self, piece: str, final: bool) -> list[dict]:
        """The `delta` objects to send for `piece` (possibly none)."""
        self.text += piece
        answer = read(self.text, final)
        out: list[dict] = []
        if len(answer.content) > self.sent_content:
            out.append({"content": answer.content[self.sent_content :]})
            self.sent_content = len(answer.content)
        for index, call in enumerate(answer.calls):
            if index == len(self.ids):
                self.ids.append(new_call_id())
                self.sent_arguments.append(0)
                function = {"name": call.name, "arguments": ""}
                out.append({"tool_calls": [{"index": index, "id": self.ids[index], "type": "function",
                                            "function": function}]})  # fmt: skip
            fresh = call.arguments[self.sent_arguments[index] :]
            if fresh:
                out.append({"tool_calls": [{"index": index, "function": {"arguments": fresh}}]})
                self.sent_arguments[index] = len(call.arguments)
        return out

    @property
    def called(self) -> bool:
        return bool(self.ids)


def message(text: str) -> dict:
    """The whole assistant message of a finished answer."""
    answer = read(text, final=True)
    if not answer.calls:
        return {"role": "assistant", "content": text}
    calls = [
        {"id": new_call_id(), "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in answer.calls
    ]
    return {"role": "assistant", "content": answer.content or None, "tool_calls": calls}
