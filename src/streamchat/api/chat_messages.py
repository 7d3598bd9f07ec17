"""OpenAI chat messages → the messages a chat template renders, tool turns included.

A template that knows tools gets assistant `tool_calls` (arguments parsed, as HF templates
expect) and `tool` messages as they are. Any other template gets the format of `tools.py`:
calls written back as `<tool_call>` blocks, results as `<tool_response>` blocks in a user turn,
and the tool definitions with instructions in the system message.
"""

from __future__ import annotations

import json
from typing import Any

from streamchat.api.errors import APIError
from streamchat.api.openai_schemas import ChatMessage
from streamchat.api.tools import Tool, call_block, tool_prompt

Message = dict[str, Any]


def template_messages(messages: list[ChatMessage], tools: list[Tool], native_tools: bool) -> list[Message]:
    out = [_message(i, m, native_tools) for i, m in enumerate(messages)]
    if tools and not native_tools:
        prompt = tool_prompt(tools)
        if out[0]["role"] == "system":
            out[0] = {**out[0], "content": f"{out[0]['content']}\n\n{prompt}"}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out


def _message(index: int, m: ChatMessage, native: bool) -> Message:
    where = f"messages[{index}]"
    try:
        content = m.text()
    except ValueError as exc:
        raise APIError(400, f"{where}: {exc}", param="messages") from exc
    if m.role == "tool":
        if not m.tool_call_id:
            raise APIError(400, f"{where}: a tool message needs 'tool_call_id'", param="messages")
        if native:
            return {"role": "tool", "content": content, "tool_call_id": m.tool_call_id}
        return {"role": "user", "content": f"<tool_response>\n{content}\n</tool_response>"}
    role = "system" if m.role == "developer" else m.role
    if role != "assistant" or not m.tool_calls:
        return {"role": role, "content": content}
    calls = [(c.id, c.function.name, _arguments(c.function.arguments, where)) for c in m.tool_calls]
    if native:
        tool_calls = [{"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in calls]
        return {"role": "assistant", "content": content, "tool_calls": tool_calls}
    blocks = [call_block(n, a) for _, n, a in calls]
    return {"role": "assistant", "content": "\n".join([content, *blocks] if content else blocks)}


def _arguments(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise APIError(400, f"{where}: tool call arguments are not JSON ({exc.msg})", param="messages") from exc
