"""An Anthropic Messages body, said as the OpenAI chat request the one engine path takes.

`generation.prepare_chat` renders, limits, samples and constrains every protocol's chat; this
module only translates: `system` becomes a system message, an assistant turn's `tool_use` blocks
its `tool_calls`, a user turn's `tool_result` blocks `tool` messages (a result marked `is_error`
is prefixed `Error: `, the only way a text model can see the flag), `tools` become functions, and
`tool_choice` `auto`/`any`/`tool`/`none` becomes `auto`/`required`/a named function/`none`.
Sampling fields are passed on only when the request set them, so the model's own defaults apply
to the rest, as on every route.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from streamchat.api.anthropic_schemas import (
    Conversation,
    InputMessage,
    MessagesRequest,
    TextBlock,
    ToolChoice,
    ToolResultBlock,
    ToolUseBlock,
)
from streamchat.api.errors import APIError
from streamchat.api.openai_schemas import ChatCompletionRequest

Message = dict[str, Any]


def chat_request(body: Conversation, max_tokens: int) -> ChatCompletionRequest:
    """The OpenAI chat request that asks for the same answer as `body`."""
    refused = body.refused_field()
    if refused is not None:
        raise APIError(400, refused)
    fields: dict[str, Any] = {"model": body.model, "messages": _messages(body), "max_tokens": max_tokens}
    if isinstance(body, MessagesRequest):
        fields.update({k: getattr(body, k) for k in ("temperature", "top_p", "top_k") if k in body.model_fields_set})
        fields["stop"] = body.stop_sequences or []
    if body.tools:
        fields["tools"] = [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.input_schema},
            }
            for t in body.tools
        ]
    if body.tool_choice is not None:
        fields["tool_choice"] = _tool_choice(body.tool_choice)
        fields["parallel_tool_calls"] = not body.tool_choice.disable_parallel_tool_use
    if body.output_config is not None and body.output_config.format is not None:
        if body.tools and (body.tool_choice is None or body.tool_choice.type != "none"):
            raise APIError(400, "'output_config.format' cannot be combined with tools on this server")
        schema = body.output_config.format.schema_
        fields["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    try:
        return ChatCompletionRequest.model_validate(fields)
    except ValidationError as exc:  # answered as any invalid body is: a 400 naming the field
        raise RequestValidationError(exc.errors()) from exc


def _tool_choice(choice: ToolChoice) -> str | dict:
    if choice.type == "tool":
        return {"type": "function", "function": {"name": choice.name}}
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type]


def _messages(body: Conversation) -> list[Message]:
    out: list[Message] = []
    system = _text(body.system)
    if system:
        out.append({"role": "system", "content": system})
    for i, m in enumerate(body.messages):
        where = f"messages.{i}"
        if all(isinstance(b, TextBlock) and not b.text for b in m.content):
            raise APIError(400, f"'{where}': content must not be empty")
        if m.role == "assistant" and i == len(body.messages) - 1:
            raise APIError(
                400, f"'{where}': a final assistant message (a prefill to continue) is not supported by this server"
            )
        out.extend(_assistant(m, where) if m.role == "assistant" else _user(m, where))
    return out


def _text(blocks: list[TextBlock]) -> str:
    return "".join(b.text for b in blocks)


def _assistant(m: InputMessage, where: str) -> list[Message]:
    text, calls = [], []
    for block in m.content:
        if isinstance(block, ToolResultBlock):
            raise APIError(400, f"'{where}': 'tool_result' blocks belong in user messages")
        if isinstance(block, ToolUseBlock):
            arguments = json.dumps(block.input, ensure_ascii=False)
            calls.append({"id": block.id, "type": "function", "function": {"name": block.name, "arguments": arguments}})
        else:
            text.append(block.text)
    message: Message = {"role": "assistant", "content": "".join(text)}
    if calls:
        message["tool_calls"] = calls
    return [message]


def _user(m: InputMessage, where: str) -> list[Message]:
    """Tool results become `tool` messages and text a user message, in the order they came."""
    out: list[Message] = []
    text: list[str] = []
    for block in m.content:
        if isinstance(block, ToolUseBlock):
            raise APIError(400, f"'{where}': 'tool_use' blocks belong in assistant messages")
        if isinstance(block, ToolResultBlock):
            if text:
                out.append({"role": "user", "content": "".join(text)})
                text = []
            result = f"Error: {block.text()}" if block.is_error else block.text()
            out.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": result})
        else:
            text.append(block.text)
    if text:
        out.append({"role": "user", "content": "".join(text)})
    return out
