"""Anthropic's Messages API through the official `anthropic` SDK, against the real server and model.

A streamed answer's text equals its final message and the non-streamed greedy answer, which is
the OpenAI route's answer to the same conversation (one engine path); forced tool use streams
`input_json_delta`s that join into input valid against the tool's schema, and the result goes back
in a `tool_result`; `count_tokens` is the prompt the answer reports; bad input is the SDK's
`BadRequestError`; a dropped stream resumes from `Last-Event-ID`. Shapes, refusals, keys and cut
streams in detail: `test_anthropic_semantics.py`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import httpx
import jsonschema
import openai
import pytest

from tests.api.test_chinese import ECHO_HISTORY, ECHO_PROMPT, assert_chinese
from tests.support import parse_sse

SEA = [{"role": "user", "content": "Tell me about the sea."}]
WEATHER = {
    "name": "get_weather",
    "description": "The current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"],
    },
}
ADD = {
    "name": "add",
    "description": "Add two numbers",
    "input_schema": {
        "type": "object",
        "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        "required": ["a", "b"],
    },
}
SCHEMAS = {t["name"]: t["input_schema"] for t in (WEATHER, ADD)}
ASK = [{"role": "user", "content": "What is the weather in Paris right now?"}]


@pytest.fixture
def claude(base_url: str) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(base_url=base_url, api_key="unused", timeout=180.0, max_retries=0)
    yield client
    client.close()


def text_of(message: anthropic.types.Message) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


def test_streamed_text_equals_the_final_message_and_the_non_streamed_answer(
    claude: anthropic.Anthropic, model_name: str
) -> None:
    kw = {"model": model_name, "max_tokens": 40, "temperature": 0, "messages": SEA}
    whole = claude.messages.create(**kw)
    assert whole.id.startswith("msg_") and whole.type == "message" and whole.role == "assistant"
    assert whole.model == model_name and [b.type for b in whole.content] == ["text"]
    assert whole.stop_reason in ("end_turn", "max_tokens") and whole.stop_sequence is None
    if whole.stop_reason == "max_tokens":
        assert whole.usage.output_tokens == 40
    with claude.messages.stream(**kw) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == text_of(final) == text_of(whole) and streamed
    assert (final.stop_reason, final.usage.input_tokens, final.usage.output_tokens) == (
        whole.stop_reason, whole.usage.input_tokens, whole.usage.output_tokens,
    )  # fmt: skip


def test_the_answer_is_the_openai_routes_answer_and_chinese_round_trips(
    claude: anthropic.Anthropic, oai: openai.OpenAI, model_name: str
) -> None:
    messages = []
    for question, answer in ECHO_HISTORY:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": ECHO_PROMPT})
    system = "You repeat what you are asked to repeat."
    kw = {"model": model_name, "max_tokens": 32, "temperature": 0}
    ours = claude.messages.create(system=system, messages=messages, **kw)
    theirs = oai.chat.completions.create(messages=[{"role": "system", "content": system}, *messages], **kw)
    assert text_of(ours) == theirs.choices[0].message.content
    assert ours.usage.input_tokens == theirs.usage.prompt_tokens
    assert_chinese(text_of(ours))
    with claude.messages.stream(system=[{"type": "text", "text": system}], messages=messages, **kw) as stream:
        pieces = list(stream.text_stream)
    assert "".join(pieces) == text_of(ours) and all("\ufffd" not in p for p in pieces)


def test_a_stop_sequence_ends_the_answer_and_is_named(claude: anthropic.Anthropic, model_name: str) -> None:
    kw = {"model": model_name, "max_tokens": 40, "temperature": 0, "messages": SEA}
    free = text_of(claude.messages.create(**kw))
    words = free.split()
    word = words[len(words) // 2]
    cut = claude.messages.create(stop_sequences=["never-in-this-answer", word], **kw)
    assert text_of(cut) == free[: free.index(word)]
    assert (cut.stop_reason, cut.stop_sequence) == ("stop_sequence", word)
    with claude.messages.stream(stop_sequences=[word], **kw) as stream:
        assert "".join(stream.text_stream) == free[: free.index(word)]
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", word)


def test_forced_tool_use_streams_valid_input_and_a_tool_result_is_answered(
    claude: anthropic.Anthropic, model_name: str
) -> None:
    kw = {"model": model_name, "temperature": 0, "tools": [WEATHER, ADD]}
    blocks: dict[int, dict] = {}
    with claude.messages.stream(max_tokens=200, messages=ASK, tool_choice={"type": "any"}, **kw) as stream:
        for event in stream:
            if event.type == "content_block_start":
                assert event.content_block.type == "tool_use" and event.content_block.input == {}
                blocks[event.index] = {"id": event.content_block.id, "name": event.content_block.name, "json": ""}
            elif event.type == "content_block_delta":
                assert event.delta.type == "input_json_delta"
                blocks[event.index]["json"] += event.delta.partial_json
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and blocks and sorted(blocks) == list(range(len(blocks)))
    assert [(b.id, b.name) for b in final.content] == [(blocks[i]["id"], blocks[i]["name"]) for i in sorted(blocks)]
    for i, block in enumerate(final.content):
        assert block.type == "tool_use" and block.id.startswith("toolu_")
        arguments = json.loads(blocks[i]["json"])
        jsonschema.validate(arguments, SCHEMAS[block.name])
        assert block.input == arguments
    results = [
        {"type": "tool_result", "tool_use_id": b.id, "content": json.dumps({"celsius": 21, "sky": "sunny"})}
        for b in final.content
    ]
    turns = [*ASK, {"role": "assistant", "content": final.content}, {"role": "user", "content": results}]
    follow = claude.messages.create(max_tokens=40, messages=turns, tool_choice={"type": "none"}, **kw)
    assert text_of(follow) and [b.type for b in follow.content] == ["text"]
    assert follow.stop_reason in ("end_turn", "max_tokens")


def test_a_named_tool_without_parallel_calls_is_called_once(claude: anthropic.Anthropic, model_name: str) -> None:
    ask = [{"role": "user", "content": "Weather in Paris, London and Rome?"}]
    choice = {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}
    message = claude.messages.create(
        model=model_name, max_tokens=200, temperature=0, messages=ask, tools=[ADD, WEATHER], tool_choice=choice
    )
    assert message.stop_reason == "tool_use"
    (block,) = message.content
    assert block.type == "tool_use" and block.name == "get_weather"
    jsonschema.validate(block.input, SCHEMAS["get_weather"])


def test_count_tokens_is_the_prompt_the_answer_reports(claude: anthropic.Anthropic, model_name: str) -> None:
    conversation = {"model": model_name, "system": "Be brief.", "messages": ASK, "tools": [WEATHER]}
    counted = claude.messages.count_tokens(**conversation)
    answered = claude.messages.create(max_tokens=8, temperature=0, **conversation)
    assert counted.input_tokens == answered.usage.input_tokens > 0
    bare = claude.messages.count_tokens(model=model_name, messages=ASK)
    assert bare.input_tokens < counted.input_tokens  # the system prompt and the tool's definition count


@pytest.mark.parametrize(
    ("kw", "named"),
    [
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "role"),
        ({"messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}]},
         "image"),
        ({"messages": ASK, "tools": [WEATHER], "tool_choice": {"type": "tool", "name": "get_time"}}, "get_time"),
        ({"messages": ASK, "thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
        ({"messages": ASK, "temperature": 1.5}, "temperature"),
    ],
    ids=["bad-role", "image", "unknown-tool", "thinking", "temperature"],
)  # fmt: skip
def test_bad_input_is_the_sdks_bad_request_error(
    claude: anthropic.Anthropic, model_name: str, kw: dict, named: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude.messages.create(model=model_name, max_tokens=8, **kw)
    body = caught.value.body
    assert caught.value.status_code == 400 and body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error" and named in body["error"]["message"]


@pytest.mark.parametrize(
    "content",
    [
        b'{"max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]',  # truncated
        b'{"max_tokens": 8, "messages": [{"role": "user", "content": "\xff\xfe"}]}',  # invalid UTF-8
        b'{"messages": [{"role": "user", "content": "hi"}]}',  # no max_tokens
        b"\x00\x01\x02",
    ],
    ids=["truncated", "invalid-utf8", "no-max-tokens", "binary"],
)
def test_hostile_bytes_are_400s_in_anthropics_shape(http: httpx.Client, model_name: str, content: bytes) -> None:
    if content.startswith(b"{"):
        content = content.replace(b"{", b'{"model": "' + model_name.encode() + b'", ', 1)
    r = http.post("/v1/messages", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == "invalid_request_error"


def test_a_lone_surrogate_is_repaired_and_answered(http: httpx.Client, model_name: str) -> None:
    """JSON may escape half an emoji (`"\\ud83c"`, what `JSON.stringify` sends); it becomes U+FFFD."""
    body = {"model": model_name, "max_tokens": 4, "messages": [{"role": "user", "content": "half \ud83c an emoji"}]}
    r = http.post("/v1/messages", content=json.dumps(body), headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["stop_reason"] in ("end_turn", "max_tokens")


def test_a_dropped_stream_resumes_from_last_event_id(http: httpx.Client, model_name: str) -> None:
    body = {"model": model_name, "max_tokens": 32, "temperature": 0, "messages": SEA}
    expected = "".join(b["text"] for b in http.post("/v1/messages", json=body).json()["content"])
    whole = parse_sse(http.post("/v1/messages", json={**body, "stream": True}).text).events
    for cut_at in (400, 1200, 2500):  # bytes: inside message_start's successors, mid-answer, near the end
        got = b""
        with http.stream("POST", "/v1/messages", json={**body, "stream": True}) as r:
            assert r.status_code == 200
            stream_id = r.headers["x-stream-id"]
            for chunk in r.iter_raw():
                got += chunk
                if len(got) >= cut_at:
                    break
        head = parse_sse(got[:cut_at].decode("utf-8", errors="ignore")).events
        assert head and head[0].event == "message_start"
        rest = http.get(f"/v1/streams/{stream_id}", headers={"Last-Event-ID": head[-1].id})
        assert rest.status_code == 200, rest.text
        events = head + parse_sse(rest.text).events
        assert [int(e.id.rpartition(":")[2]) for e in events] == list(range(len(events)))
        assert [e.event for e in events] == [e.event for e in whole]
        assert events[-1].event == "message_stop" and all(e.data != "[DONE]" for e in events)
        texts = [json.loads(e.data)["delta"].get("text", "") for e in events if e.event == "content_block_delta"]
        assert "".join(texts) == expected
