"""Function tools: what the request declares, how the prompt shows them, and the call grammar.

Calls are written the way Hermes-format models (Qwen2.5, Hermes, SmolLM3) write them, one block
per call:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

A chat template that knows tools (it reads a `tools` variable) renders the definitions and the
conversation's calls and results itself. Otherwise (the embedded SmolLM2's template) the
definitions go into the system message with instructions for that format, earlier calls are
written back as those blocks, and tool results as `<tool_response>` blocks in a user turn.

`tool_choice` becomes a grammar: `required` and a named function are constrained from the first
token; `auto` leaves the text free until the model writes `<tool_call>`, and only then constrains
the call (a lazy grammar: the free text costs a trivial mask). `none` sends no tools at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from streamchat.api.errors import APIError
from streamchat.engine.grammar import specs

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    strict: bool | None = None


class Tool(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"]
    function: FunctionName


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


@dataclass(frozen=True)
class ToolPlan:
    """The tools a request may call and how: `grammar` is None when it may not call any."""

    tools: list[Tool]
    grammar: str | None
    description: str


def plan(tools: list[Tool] | None, choice: ToolChoice | None, parallel: bool) -> ToolPlan:
    """Check the declarations against `tool_choice` and build the call grammar."""
    tools = tools or []
    if choice is not None and choice != "none" and not tools:
        raise APIError(400, "'tool_choice' needs 'tools'", param="tool_choice")
    names = [t.function.name for t in tools]
    if len(set(names)) != len(names):
        raise APIError(400, "tool names must be unique", param="tools")
    if not tools or choice == "none":
        return ToolPlan([], None, "")
    if isinstance(choice, NamedToolChoice):
        if choice.function.name not in names:
            raise APIError(
                400, f"'tool_choice' names '{choice.function.name}', which is not among the tools: {', '.join(names)}",
                param="tool_choice",
            )  # fmt: skip
        only = [t for t in tools if t.function.name == choice.function.name]
        return ToolPlan(tools, _grammar(only, "required", parallel=False), f"call of {choice.function.name}")
    mode = choice or "auto"
    return ToolPlan(tools, _grammar(tools, mode, parallel), f"tool calls ({mode})")


def _grammar(tools: list[Tool], mode: str, parallel: bool) -> str:
    body = {
        "anyOf": [
            {
                "type": "object",
                "properties": {"name": {"const": t.function.name}, "arguments": specs.closed(t.function.parameters)},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for t in tools
        ],
        "x-guidance": specs.JSON_LAYOUT,
    }
    more = ' ("\\n" call)*' if parallel else ""
    rules = [
        f"call: {specs.literal(CALL_OPEN + chr(10))} body {specs.literal(chr(10) + CALL_CLOSE)}",
        f"body: %json {json.dumps(body)}",
    ]
    if mode == "required":
        rules.insert(0, f"start: call{more}")
    else:  # auto: free text, or text up to the opening marker and then calls
        rules[:0] = [
            f"start: TEXT | first{more}",
            f'first: head "\\n" body {specs.literal(chr(10) + CALL_CLOSE)}',
            f"head[lazy]: TEXT {specs.literal(CALL_OPEN)}",
            f"TEXT: /(?s:.*)/ & ~/(?s:.*){CALL_OPEN}(?s:.*)/",
        ]
    return specs.lark("\n".join(rules))


def template_knows_tools(tokenizer: object) -> bool:
    template = getattr(tokenizer, "chat_template", None)
    return isinstance(template, str) and "tools" in template


def tool_prompt(tools: list[Tool]) -> str:
    """The instructions a template without tool support gets in its system message."""
    listed = "\n".join(json.dumps(t.model_dump(exclude_none=True), ensure_ascii=False) for t in tools)
    return (
        "You can call functions to help with the user's request. The functions, as JSON schemas:\n"
        f"<tools>\n{listed}\n</tools>\n"
        "To call a function, answer with a JSON object naming it and giving its arguments, inside "
        f"{CALL_OPEN}{CALL_CLOSE} tags, one block per call:\n"
        f'{CALL_OPEN}\n{{"name": <function name>, "arguments": <arguments as a JSON object>}}\n{CALL_CLOSE}'
    )


def call_block(name: str, arguments: Any) -> str:
    return f"{CALL_OPEN}\n{json.dumps({'name': name, 'arguments': arguments}, ensure_ascii=False)}\n{CALL_CLOSE}"
