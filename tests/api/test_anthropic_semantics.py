"""Anthropic's Messages API in process (`tests/api/inprocess.py`): shapes, refusals, keys, endings.

The fake runner answers " hello" at every step, so event sequences, stop sequences and length
limits are exact; bad input is decided before the model runs, and keys around it. The model's
own answers through the official SDK are in `test_anthropic.py`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import anthropic
import pytest

from streamchat.api.anthropic import _events
from streamchat.api.anthropic_shapes import MessageEvents, MessageShape
from streamchat.config import Settings
from streamchat.engine.types import Delta, FinishReason, Usage
from tests.api.inprocess import MODEL_NAME, InProcess, StartInProcess, holding
from tests.support import parse_sse

MESSAGES = "/v1/messages"
HI = [{"role": "user", "content": "Hi"}]
BODY = {"model": MODEL_NAME, "max_tokens": 4, "messages": HI}
WEATHER = {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


def assert_anthropic_error(response, status: int, kind: str, *named: str) -> str:
    """Anthropic's error shape with the expected status and type; returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"type", "error"} and body["type"] == "error", body
    assert set(body["error"]) == {"type", "message"} and body["error"]["type"] == kind, body
    message = body["error"]["message"]
    assert message and all(name in message for name in named), message
    return message


def asking(*blocks: dict) -> dict:
    """A request whose one user message holds `blocks`."""
    return {**BODY, "messages": [{"role": "user", "content": list(blocks)}]}


BAD = [
    ({k: v for k, v in BODY.items() if k != "max_tokens"}, "max_tokens"),
    ({k: v for k, v in BODY.items() if k != "messages"}, "messages"),
    ({**BODY, "messages": []}, "messages"),
    ({**BODY, "max_tokens": 0}, "max_tokens"),
    ({**BODY, "temperature": 1.5}, "temperature"),
    ({**BODY, "top_p": 0}, "top_p"),
    ({**BODY, "top_k": -1}, "top_k"),
    ({**BODY, "stop_sequences": [""]}, "stop_sequences"),
    ({**BODY, "messages": [{"role": "system", "content": "Be brief."}]}, "role"),
    ({**BODY, "messages": [{"role": "user", "content": ""}]}, "messages.0"),
    ({**BODY, "messages": [{"role": "user", "content": 5}]}, "content"),
    (asking({"type": "image", "source": {}}), "image"),
    (asking({"type": "document", "source": {}}), "document"),
    ({**BODY, "system": [{"type": "image", "source": {}}]}, "image"),
    (asking({"type": "tool_result", "tool_use_id": "t", "content": [{"type": "image", "source": {}}]}), "image"),
    ({**BODY, "messages": [*HI, {"role": "assistant", "content": "Sure,"}]}, "prefill"),
    (asking({"type": "tool_use", "id": "t", "name": "x", "input": {}}), "tool_use"),
    (asking({"type": "tool_use", "name": "x", "input": {}}), "id"),
    ({**BODY, "thinking": {"type": "enabled", "budget_tokens": 1024}}, "thinking"),
    ({**BODY, "mcp_servers": [{"type": "url", "url": "https://example.com", "name": "x"}]}, "mcp_servers"),
    ({**BODY, "container": "c"}, "container"),
    ({**BODY, "output_config": {"effort": "high"}}, "effort"),
    ({**BODY, "max_tokenz": 5}, "max_tokenz"),
    ({**BODY, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "web_search_20250305"),
    ({**BODY, "tools": [{"name": "bad name", "input_schema": {"type": "object"}}]}, "name"),
    ({**BODY, "tools": [{"name": "x", "input_schema": {"type": "string"}}]}, "input_schema"),
    ({**BODY, "tools": [WEATHER], "tool_choice": {"type": "tool", "name": "nope"}}, "nope"),
    ({**BODY, "tools": [WEATHER], "tool_choice": {"type": "tool"}}, "name"),
    ({**BODY, "tools": [WEATHER], "tool_choice": {"type": "sometimes"}}, "tool_choice"),
    ({**BODY, "tools": [WEATHER, WEATHER]}, "unique"),
    ({**BODY, "tool_choice": {"type": "any"}}, "tools"),
    ({**BODY, "tools": [WEATHER], "output_config": {"format": {"type": "json_schema", "schema": {}}}}, "output_config"),
]


MESSAGES_ONLY = {"max_tokens", "temperature", "top_p", "top_k", "stop_sequences"}


@pytest.mark.parametrize(("body", "named"), BAD, ids=[f"{i}-{n}" for i, (_, n) in enumerate(BAD)])
async def test_bad_input_is_a_400_in_anthropics_shape(inprocess: InProcess, body: dict, named: str) -> None:
    r = await inprocess.client.post(MESSAGES, json=body)
    assert_anthropic_error(r, 400, "invalid_request_error", named)
    if named not in MESSAGES_ONLY:  # count_tokens takes the same conversation and refuses it the same way
        counted = {k: v for k, v in body.items() if k not in MESSAGES_ONLY}
        r = await inprocess.client.post(f"{MESSAGES}/count_tokens", json=counted)
        assert_anthropic_error(r, 400, "invalid_request_error", named)
    assert inprocess.runner.prompts == [], "a refused request reached the engine"


@pytest.mark.parametrize(
    "content",
    [b'{"model": "x", "max_tokens": ', b"not json", b'{"model": "\xff\xfe", "max_tokens": 4}', b"[1, 2]", b""],
    ids=["truncated", "not-json", "invalid-utf8", "array", "empty"],
)
async def test_hostile_bodies_are_400s_in_anthropics_shape(inprocess: InProcess, content: bytes) -> None:
    r = await inprocess.client.post(MESSAGES, content=content, headers={"content-type": "application/json"})
    assert_anthropic_error(r, 400, "invalid_request_error")


async def test_an_unknown_model_is_a_404_not_found_error(inprocess: InProcess) -> None:
    r = await inprocess.client.post(MESSAGES, json={**BODY, "model": "claude-nope"})
    assert_anthropic_error(r, 404, "not_found_error", "claude-nope")


async def test_a_lone_surrogate_is_repaired_not_refused(inprocess: InProcess) -> None:
    body = json.dumps({**BODY, "messages": [{"role": "user", "content": "half \ud83c an emoji"}]}, ensure_ascii=True)
    r = await inprocess.client.post(MESSAGES, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert "half \ufffd an emoji" in inprocess.fed_text()


async def test_the_whole_message_and_its_exact_shape(inprocess: InProcess) -> None:
    body = (await inprocess.client.post(MESSAGES, json={**BODY, "metadata": {"user_id": "u-1"}})).json()
    assert set(body) == {"id", "type", "role", "model", "content", "stop_reason", "stop_sequence", "usage"}
    assert body["id"].startswith("msg_") and body["type"] == "message" and body["role"] == "assistant"
    assert body["model"] == MODEL_NAME
    assert body["content"] == [{"type": "text", "text": " hello" * 4}]
    assert (body["stop_reason"], body["stop_sequence"]) == ("max_tokens", None)
    count = (await inprocess.client.post(f"{MESSAGES}/count_tokens", json={"model": MODEL_NAME, "messages": HI})).json()
    assert body["usage"] == {"input_tokens": count["input_tokens"], "output_tokens": 4}


async def test_the_stream_sends_anthropics_events_in_order_each_with_our_id(inprocess: InProcess) -> None:
    r = await inprocess.client.post(MESSAGES, json={**BODY, "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text).events
    stream_id = r.headers["x-stream-id"]
    assert [e.id for e in events] == [f"{stream_id}:{n}" for n in range(len(events))]
    names = [e.event for e in events]
    assert names == ["message_start", "ping", "content_block_start", *["content_block_delta"] * 4,
                     "content_block_stop", "message_delta", "message_stop"]  # fmt: skip
    data = [json.loads(e.data) for e in events]
    assert all(d["type"] == e.event for d, e in zip(data, events, strict=True))
    start = data[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["usage"]["input_tokens"] > 0
    assert data[2] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert data[3] == {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " hello"}}
    assert data[-2]["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert data[-2]["usage"]["output_tokens"] == 4


@pytest.mark.parametrize(
    ("stops", "text", "reported"),
    [
        ([" hello hello"], "", " hello hello"),
        (["nowhere", "llo he"], " he", "llo he"),
        (["hello h", "llo"], " he", "llo"),  # two found: the earlier one ended it
        (["nowhere"], " hello" * 4, None),
    ],
)
async def test_the_stop_sequence_that_ended_the_answer_is_named(
    inprocess: InProcess, stops: list[str], text: str, reported: str | None
) -> None:
    body = {**BODY, "stop_sequences": stops}
    whole = (await inprocess.client.post(MESSAGES, json=body)).json()
    assert "".join(b["text"] for b in whole["content"]) == text
    expected = ("stop_sequence", reported) if reported else ("max_tokens", None)
    assert (whole["stop_reason"], whole["stop_sequence"]) == expected
    streamed = parse_sse((await inprocess.client.post(MESSAGES, json={**body, "stream": True})).text).events
    delta = next(json.loads(e.data) for e in streamed if e.event == "message_delta")["delta"]
    assert (delta["stop_reason"], delta["stop_sequence"]) == expected


async def test_keys_through_the_sdk_x_api_key_and_bearer(start_inprocess: StartInProcess) -> None:
    async with start_inprocess(Settings(api_key=["right-key"])) as server:
        kw = {"base_url": "http://test", "http_client": server.client, "max_retries": 0}
        ask = {"model": MODEL_NAME, "max_tokens": 2, "messages": HI}
        good = anthropic.AsyncAnthropic(api_key="right-key", **kw)
        assert (await good.messages.create(**ask)).content[0].text == " hello hello"
        assert (await good.messages.count_tokens(model=MODEL_NAME, messages=HI)).input_tokens > 0
        bearer = anthropic.AsyncAnthropic(auth_token="right-key", **kw)
        assert (await bearer.messages.create(**ask)).stop_reason == "max_tokens"
        wrong = anthropic.AsyncAnthropic(api_key="wrong-key", **kw)
        with pytest.raises(anthropic.AuthenticationError) as caught:
            await wrong.messages.create(**ask)
        assert caught.value.status_code == 401
        assert caught.value.body["type"] == "error"
        assert caught.value.body["error"]["type"] == "authentication_error"
        for path, body in ((MESSAGES, ask), (f"{MESSAGES}/count_tokens", {"model": MODEL_NAME, "messages": HI})):
            assert_anthropic_error(await server.client.post(path, json=body), 401, "authentication_error")
        assert len(server.runner.prompts) == 2, "only the two requests with the right key reached the engine"


async def test_a_stream_cut_by_shutdown_ends_with_anthropics_error_and_no_done(inprocess: InProcess) -> None:
    body = {**BODY, "max_tokens": 64, "stream": True}
    async with holding(inprocess, [lambda: inprocess.client.post(MESSAGES, json=body)]) as (task,):
        await inprocess.state.streams.shutdown()
    events = parse_sse(task.result().text).events
    assert events[0].event == "message_start" and events[-1].event == "error"
    assert all(e.data != "[DONE]" for e in events)
    error = json.loads(events[-1].data)
    assert error["type"] == "error" and error["error"]["type"] == "overloaded_error"
    assert "server_shutdown" in error["error"]["message"]


async def test_a_generation_failure_mid_stream_is_anthropics_error_event() -> None:
    async def deltas() -> AsyncIterator[Delta]:
        yield Delta("Hel", (1,))
        await asyncio.sleep(0)
        yield Delta("", (2,), FinishReason.ERROR, Usage(3, 2), error="grammar violated")

    shape = MessageShape("msg_x", "m", 3, False, (), tokenizer=None)  # type: ignore[arg-type]
    events = [e async for e in _events(deltas(), MessageEvents(shape))]
    assert [e.name for e in events] == ["message_start", "ping", "content_block_start", "content_block_delta", "error"]
    assert json.loads(events[-1].data) == {
        "type": "error",
        "error": {"type": "api_error", "message": "generation failed: grammar violated"},
    }
