"""Tool calls through the official `openai` SDK against the real server.

Streamed calls accumulate (by `index`) into arguments that validate against the function's
parameters; `required` and a named function always call, `none` never does; a follow-up turn with
the call and its `tool` result renders and is answered; bad declarations are 400s.
"""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

from tests.support import assert_error

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two numbers",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, ADD]
PARAMETERS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
ASK = [{"role": "user", "content": "What is the weather in Paris right now?"}]


def streamed_calls(oai: openai.OpenAI, model: str, **kw) -> tuple[str, list[dict], str | None]:
    """Content, the calls assembled from their deltas, and the finish reason."""
    content, calls, finish = "", {}, None
    for chunk in oai.chat.completions.create(model=model, stream=True, max_tokens=200, temperature=0, **kw):
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        content += choice.delta.content or ""
        for call in choice.delta.tool_calls or []:
            if call.id is not None:  # the first chunk of a call names it
                assert call.index not in calls and call.type == "function" and call.function.name
                calls[call.index] = {"id": call.id, "name": call.function.name, "arguments": ""}
            calls[call.index]["arguments"] += call.function.arguments or ""
        finish = choice.finish_reason or finish
    return content, [calls[i] for i in sorted(calls)], finish


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_streamed_calls_assemble_into_valid_arguments(oai: openai.OpenAI, model_name: str, choice) -> None:
    content, calls, finish = streamed_calls(oai, model_name, messages=ASK, tools=TOOLS, tool_choice=choice)
    assert finish == "tool_calls"
    assert calls and content == ""
    for call in calls:
        assert call["id"].startswith("call_")
        jsonschema.validate(json.loads(call["arguments"]), PARAMETERS[call["name"]])
    if isinstance(choice, dict):
        assert [c["name"] for c in calls] == ["get_weather"]


def test_parallel_calls_off_gives_exactly_one(oai: openai.OpenAI, model_name: str) -> None:
    ask = [{"role": "user", "content": "Weather in Paris, London and Rome?"}]
    _, calls, finish = streamed_calls(
        oai, model_name, messages=ask, tools=TOOLS, tool_choice="required", parallel_tool_calls=False
    )
    assert finish == "tool_calls" and len(calls) == 1


def test_non_streamed_calls_and_a_follow_up_turn(oai: openai.OpenAI, model_name: str) -> None:
    r = oai.chat.completions.create(
        model=model_name, messages=ASK, tools=TOOLS, tool_choice="required", temperature=0, max_tokens=200
    )
    (choice,) = r.choices
    assert choice.finish_reason == "tool_calls"
    message = choice.message
    assert message.content is None and message.tool_calls
    for call in message.tool_calls:
        jsonschema.validate(json.loads(call.function.arguments), PARAMETERS[call.function.name])
    results = [
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"celsius": 21, "sky": "sunny"})}
        for call in message.tool_calls
    ]
    follow = oai.chat.completions.create(
        model=model_name,
        messages=[*ASK, message.model_dump(exclude_none=True), *results],
        tools=TOOLS,
        tool_choice="none",
        temperature=0,
        max_tokens=40,
    )
    assert follow.choices[0].message.content and not follow.choices[0].message.tool_calls
    assert follow.choices[0].finish_reason in ("stop", "length")


def test_auto_lets_the_model_answer_in_text(oai: openai.OpenAI, model_name: str) -> None:
    content, calls, finish = streamed_calls(
        oai, model_name, messages=[{"role": "user", "content": "Say hello."}], tools=[ADD], tool_choice="auto"
    )
    if calls:  # the model chose to call: the call is still valid
        assert finish == "tool_calls"
        for call in calls:
            jsonschema.validate(json.loads(call["arguments"]), PARAMETERS[call["name"]])
    else:
        assert content and "<tool_call" not in content and finish in ("stop", "length")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [WEATHER, WEATHER]}, "tools"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, None),
        ({"tools": [{"type": "retrieval"}]}, None),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "strin"}}}],
          "tool_choice": "required"}, "tools"),
        ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, "response_format"),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, None),
        ({"functions": [{"name": "f"}]}, None),
    ],
)  # fmt: skip
def test_bad_tool_declarations_are_refused(http: httpx.Client, body: dict, param: str | None) -> None:
    full = {"messages": ASK, "max_tokens": 5, **body}
    assert_error(http.post("/v1/chat/completions", json=full), 400, param)


@pytest.mark.parametrize(
    "message",
    [
        {"role": "tool", "content": "21 degrees"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function",
                                              "function": {"name": "add", "arguments": "{not json"}}]},
    ],
)  # fmt: skip
def test_bad_tool_turns_are_refused(http: httpx.Client, message: dict) -> None:
    body = {"messages": [*ASK, message], "tools": TOOLS, "max_tokens": 5}
    assert "messages[1]" in assert_error(http.post("/v1/chat/completions", json=body), 400, "messages")["message"]
