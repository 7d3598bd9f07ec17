"""Request bodies of the Responses API, and their translation into the chat request every
protocol shares (`generation.prepare_chat`).

`input` is a string or a list of items: messages (content a string or `input_text` /
`output_text` parts), `function_call` items the model made earlier and `function_call_output`
items carrying their results. Items the server cannot honour (images, files, hosted tools,
reasoning) are refused with a 400 naming them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamchat.api.errors import APIError
from streamchat.api.openai_schemas import ChatCompletionRequest
from streamchat.api.structured_outputs import JsonSchema
from streamchat.api.text_repair import RepairedModel


class FunctionTool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    name: str = Field(..., pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedFunction(BaseModel):
    type: Literal["function"]
    name: str


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    description: str | None = None
    schema_: JsonSchema | None = Field(None, alias="schema")
    strict: bool | None = None


class TextConfig(BaseModel):
    format: TextFormat = Field(default_factory=TextFormat)
    verbosity: str | None = None


class ResponseRequest(RepairedModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    tools: list[FunctionTool] = Field(default_factory=list)
    tool_choice: Literal["none", "auto", "required"] | NamedFunction = "auto"
    parallel_tool_calls: bool = True
    text: TextConfig = Field(default_factory=TextConfig)
    stream: bool = False
    store: bool = True
    background: bool = False
    previous_response_id: str | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    truncation: Literal["auto", "disabled"] | None = None
    reasoning: dict[str, Any] | None = None


def input_messages(body: ResponseRequest) -> list[dict[str, Any]]:
    """`input` as chat messages (OpenAI chat form)."""
    if isinstance(body.input, str):
        return [{"role": "user", "content": body.input}]
    out: list[dict[str, Any]] = []
    for i, item in enumerate(body.input):
        where = f"input[{i}]"
        kind = item.get("type", "message")
        if kind == "message":
            out.append({"role": _role(item, where), "content": _text(item.get("content"), where)})
        elif kind == "function_call":
            function = {"name": _string(item, "name", where), "arguments": _string(item, "arguments", where)}
            call = {"id": _string(item, "call_id", where), "type": "function", "function": function}
            if out and out[-1]["role"] == "assistant" and out[-1].get("tool_calls"):
                out[-1]["tool_calls"].append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _text(output, where)
            out.append({"role": "tool", "tool_call_id": _string(item, "call_id", where), "content": text})
        else:
            raise APIError(400, f"{where}: items of type '{kind}' are not supported", param="input")
    if not out:
        raise APIError(400, "'input' must not be empty", param="input")
    return out


def chat_request(body: ResponseRequest, messages: list[dict[str, Any]]) -> ChatCompletionRequest:
    """The chat the response answers: instructions first, then the conversation."""
    if body.reasoning and any(v is not None for v in body.reasoning.values()):
        raise APIError(400, "'reasoning': this model does not reason", param="reasoning")
    system = [{"role": "system", "content": body.instructions}] if body.instructions else []
    fields: dict[str, Any] = {
        "messages": system + messages,
        "tools": [
            {"type": "function", "function": t.model_dump(exclude_none=True, exclude={"type"})} for t in body.tools
        ]
        or None,  # fmt: skip
        "tool_choice": body.tool_choice
        if isinstance(body.tool_choice, str)
        else {"type": "function", "function": {"name": body.tool_choice.name}},
        "parallel_tool_calls": body.parallel_tool_calls,
        "max_tokens": body.max_output_tokens,
        "response_format": _response_format(body.text.format),
    }
    if not body.tools:
        fields["tool_choice"] = None if body.tool_choice in ("auto", "none") else fields["tool_choice"]
    for name in ("temperature", "top_p"):
        if getattr(body, name) is not None:
            fields[name] = getattr(body, name)
    extra = {k: v for k, v in (body.model_extra or {}).items() if k in ChatCompletionRequest.model_fields}
    try:
        return ChatCompletionRequest.model_validate({**extra, **{k: v for k, v in fields.items() if v is not None}})
    except ValidationError as exc:  # what the translation carried over is wrong: name the field
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "input"
        raise APIError(400, f"'{where}': {first['msg']}", param=where.split(".")[0]) from exc


def _response_format(fmt: TextFormat) -> dict[str, Any] | None:
    if fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object"}
    if fmt.schema_ is None:
        raise APIError(400, "'text.format.schema' is required for json_schema", param="text.format.schema")
    return {"type": "json_schema", "json_schema": {"name": fmt.name or "response", "schema": fmt.schema_}}


def _role(item: dict[str, Any], where: str) -> str:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise APIError(400, f"{where}: 'role' must be user, assistant, system or developer", param="input")
    return str(role)


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise APIError(400, f"{where}: 'content' must be a string or a list of text parts", param="input")
    parts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text", "text"):
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise APIError(400, f"{where}: content parts of type '{kind}' are not supported", param="input")
        if not isinstance(part.get("text"), str):
            raise APIError(400, f"{where}: a text part needs 'text'", param="input")
        parts.append(part["text"])
    return "".join(parts)


def _string(item: dict[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise APIError(400, f"{where}: '{key}' must be a string", param="input")
    return value
