"""The Responses API through the official `openai` SDK against the real server."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

from tests.support import assert_error

GREEDY = {"temperature": 0, "max_output_tokens": 24}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def test_streamed_events_and_text_equal_the_whole_response(oai: openai.OpenAI, model_name: str) -> None:
    whole = oai.responses.create(model=model_name, input="Name three colours.", **GREEDY)
    events = list(oai.responses.create(model=model_name, input="Name three colours.", stream=True, **GREEDY))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]  # fmt: skip
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.incomplete" if whole.status == "incomplete" else "response.completed"]  # fmt: skip
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == whole.output_text and text
    final = events[-1].response
    assert final.output_text == text and final.usage.output_tokens == whole.usage.output_tokens
    assert oai.responses.retrieve(whole.id).output_text == text, "stored by default"


def test_a_background_response_reattaches_after_a_drop(oai: openai.OpenAI, model_name: str) -> None:
    started = oai.responses.create(
        model=model_name, input="Tell a long story about a cat.", background=True, temperature=0, max_output_tokens=60
    )
    assert started.status in ("queued", "in_progress")
    first = []
    with oai.responses.retrieve(started.id, stream=True) as stream:
        for event in stream:
            first.append(event)
            if len(first) == 7:
                break  # the connection drops here
    rest = list(oai.responses.retrieve(started.id, stream=True, starting_after=first[-1].sequence_number))
    events = first + rest
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = oai.responses.retrieve(started.id)
    assert final.status in ("completed", "incomplete")
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == final.output_text


def test_previous_response_id_chains_turns(oai: openai.OpenAI, model_name: str, http: httpx.Client) -> None:
    first = oai.responses.create(model=model_name, input="My name is Ada.", **GREEDY)
    second = oai.responses.create(model=model_name, input="What is my name?", previous_response_id=first.id, **GREEDY)
    assert second.previous_response_id == first.id and second.output_text
    # the chained turn sees the first exchange: its prompt is longer than the question alone
    alone = oai.responses.create(model=model_name, input="What is my name?", **GREEDY)
    assert second.usage.input_tokens > alone.usage.input_tokens + first.usage.output_tokens
    assert_error(http.post("/v1/responses", json={"input": "hi", "previous_response_id": "resp_nope"}), 404,
                 "previous_response_id")  # fmt: skip


def test_function_calls_round_trip(oai: openai.OpenAI, model_name: str) -> None:
    called = oai.responses.create(
        model=model_name, input="What is the weather in Paris?", tools=[WEATHER], tool_choice="required",
        temperature=0, parallel_tool_calls=False,
    )  # fmt: skip
    (call,) = [item for item in called.output if item.type == "function_call"]
    assert call.name == "get_weather" and call.call_id.startswith("call_")
    jsonschema.validate(json.loads(call.arguments), WEATHER["parameters"])
    answer = oai.responses.create(
        model=model_name, previous_response_id=called.id, tools=[WEATHER], **GREEDY,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 degrees"}],
    )  # fmt: skip
    assert answer.output_text


def test_streamed_function_call_arguments(oai: openai.OpenAI, model_name: str) -> None:
    events = list(oai.responses.create(model=model_name, input="Weather in Rome?", tools=[WEATHER],
                                       tool_choice={"type": "function", "name": "get_weather"}, temperature=0,
                                       stream=True))  # fmt: skip
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    (done,) = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done.arguments == deltas
    jsonschema.validate(json.loads(deltas), WEATHER["parameters"])
    assert events[-1].type == "response.completed"


def test_json_schema_text_format(oai: openai.OpenAI, model_name: str) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    r = oai.responses.create(model=model_name, input="Name a city.", temperature=0, max_output_tokens=60,
                             text={"format": {"type": "json_schema", "name": "city", "schema": schema}})  # fmt: skip
    jsonschema.validate(json.loads(r.output_text), schema)


def test_cancel_and_delete(oai: openai.OpenAI, model_name: str, http: httpx.Client) -> None:
    started = oai.responses.create(
        model=model_name, input="Count to a thousand.", background=True, max_output_tokens=2000
    )
    cancelled = oai.responses.cancel(started.id)
    assert cancelled.status in ("cancelled", "completed", "incomplete")
    oai.responses.delete(started.id)
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(started.id)
    plain = oai.responses.create(model=model_name, input="hi", **GREEDY)
    assert_error(http.post(f"/v1/responses/{plain.id}/cancel"), 400)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({}, 400),
        ({"input": []}, 400),
        ({"input": [{"role": "wizard", "content": "hi"}]}, 400),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}, 400),
        ({"input": [{"type": "web_search_call"}]}, 400),
        ({"input": "hi", "tools": [{"type": "web_search"}]}, 400),
        ({"input": "hi", "background": True, "store": False}, 400),
        ({"input": "hi", "reasoning": {"effort": "high"}}, 400),
        ({"input": "hi", "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "strin"}}}}, 400),
        ({"input": "hi", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "nope"}}, 400),
    ],
)
def test_bad_input_gets_a_clear_error(http: httpx.Client, body: dict, status: int) -> None:
    assert_error(http.post("/v1/responses", json=body), status)


def test_a_lone_surrogate_is_repaired_not_refused(http: httpx.Client) -> None:
    raw = b'{"input": "\\ud800 half an emoji", "max_output_tokens": 2}'
    r = http.post("/v1/responses", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("raw", [b'{"input": "hi"', b"\xff\xfe not utf-8", b'{"input": 5}'])
def test_hostile_bytes_are_400s(http: httpx.Client, raw: bytes) -> None:
    assert_error(http.post("/v1/responses", content=raw, headers={"content-type": "application/json"}), 400)


def test_unknown_ids_are_404(http: httpx.Client) -> None:
    for method, path in [("GET", "/v1/responses/resp_x"), ("DELETE", "/v1/responses/resp_x"),
                         ("POST", "/v1/responses/resp_x/cancel")]:  # fmt: skip
        assert_error(http.request(method, path), 404)


async def test_a_response_belongs_to_the_key_that_created_it(start_inprocess) -> None:
    from streamchat.config import Settings

    async with start_inprocess(Settings(api_key=["k1", "k2"])) as server:
        client = server.client
        mine, theirs = {"Authorization": "Bearer k1"}, {"x-api-key": "k2"}
        created = await client.post("/v1/responses", json={"input": "hi", "max_output_tokens": 3}, headers=mine)
        assert created.status_code == 200, created.text
        response_id = created.json()["id"]
        for method, path in [("GET", f"/v1/responses/{response_id}"), ("DELETE", f"/v1/responses/{response_id}")]:
            assert_error(await client.request(method, path, headers=theirs), 404)
        chained = {"input": "more", "previous_response_id": response_id}
        assert_error(await client.post("/v1/responses", json=chained, headers=theirs), 404)
        assert (await client.get(f"/v1/responses/{response_id}", headers=mine)).json()["id"] == response_id
        assert_error(await client.post("/v1/responses", json={"input": "hi"}), 401)


async def test_fields_refused_after_translation_are_400s(inprocess) -> None:
    """Regression (fuzzing): a value the chat request refuses (an empty tool name, an extra sampling
    field of the wrong type) raised a pydantic error out of the route: a 500."""
    for body in [{"input": "hi", "tools": [{"type": "function", "name": ""}]},
                 {"input": "hi", "max_output_tokens": 3, "top_k": "many"}]:  # fmt: skip
        assert_error(await inprocess.client.post("/v1/responses", json=body), 400)
