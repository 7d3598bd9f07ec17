"""Ollama's API through the official `ollama` client, against the real server and model.

Greedy answers (temperature 0) are the same streamed and not, through `/api/chat` and through
`/api/generate`, which puts its prompt in the same chat template; Chinese comes back whole;
`format` answers parse and validate; a tool call arrives whole in one chunk; `options` shape the
answer; lines arrive as they are produced; a client that leaves aborts its request; bad input gets
Ollama's error shape. Shapes and refusals without the model are in `test_ollama_semantics.py`.
"""

from __future__ import annotations

import json
import time

import httpx
import jsonschema
import ollama
import pytest
from pydantic import BaseModel, Field

from tests.api.test_chinese import ECHO_HISTORY, ECHO_PROMPT, assert_chinese
from tests.api.test_metrics import grew, scrape
from tests.api.test_ollama_semantics import assert_ollama_error
from tests.support import CHINESE_PROMPT, CJK, LONG_ANSWER, wait_for

GREEDY = {"temperature": 0, "num_predict": 24}
SEA = [{"role": "user", "content": "Tell me about the sea."}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def called(city: str) -> list[dict]:
    """A turn in which the model called get_weather, as Ollama's clients send it back: no call id."""
    return [
        {"role": "user", "content": f"What is the weather in {city}?"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather",
                                                                           "arguments": {"city": city}}}]},
    ]  # fmt: skip


# Three earlier turns that called the tool: SmolLM2-135M then calls it too (greedy), on its own.
ASK_WEATHER = [*called("London"), *called("Rome"), *called("Berlin"), {"role": "user", "content": "Weather in Paris?"}]


@pytest.fixture
def client(base_url: str) -> ollama.Client:
    return ollama.Client(host=base_url, timeout=120)


def test_chat_streamed_joins_into_the_answer_not_streamed(client: ollama.Client, model_name: str) -> None:
    chunks = list(client.chat(model_name, messages=SEA, stream=True, options=GREEDY))
    whole = client.chat(model_name, messages=SEA, options=GREEDY)
    assert len(chunks) > 2 and all(not c.done for c in chunks[:-1]) and chunks[-1].done
    assert "".join(c.message.content for c in chunks) == whole.message.content
    assert whole.message.content.strip() and whole.message.role == "assistant"
    last = chunks[-1]
    assert (last.done_reason, whole.done_reason) == ("length", "length")
    assert last.eval_count == whole.eval_count == GREEDY["num_predict"]
    assert last.prompt_eval_count == whole.prompt_eval_count > 0
    assert 0 < last.eval_duration < last.total_duration


def test_generate_both_ways_and_through_the_same_template_as_chat(client: ollama.Client, model_name: str) -> None:
    kw = {"prompt": "Tell me about the sea.", "system": "You are a poet.", "options": GREEDY}
    streamed = "".join(c.response for c in client.generate(f"{model_name}:latest", stream=True, **kw))
    whole = client.generate(model_name, **kw)
    assert streamed == whole.response and whole.response.strip()
    chat = client.chat(model_name, messages=[{"role": "system", "content": "You are a poet."}, *SEA], options=GREEDY)
    assert chat.message.content == whole.response


def test_chinese_round_trips_on_the_wire_and_through_the_client(
    base_url: str, client: ollama.Client, model_name: str
) -> None:
    kw = {"prompt": CHINESE_PROMPT, "raw": True, "options": {"temperature": 0, "num_predict": 16}}
    whole = client.generate(model_name, **kw).response
    assert_chinese(whole)
    body = {"model": model_name, **kw}
    r = httpx.post(f"{base_url}/api/generate", json=body, timeout=120)
    assert "\\u" not in r.text and CJK.search(r.text)  # the characters themselves, UTF-8, on the wire
    pieces = [json.loads(line)["response"] for line in r.text.splitlines()]
    assert "".join(pieces) == whole and all("\ufffd" not in p for p in pieces)
    history = []
    for question, answer in ECHO_HISTORY:
        history += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    history.append({"role": "user", "content": ECHO_PROMPT})
    echoed = client.chat(model_name, messages=history, options={"temperature": 0, "num_predict": 32})
    assert_chinese(echoed.message.content)


def test_lines_arrive_as_the_tokens_are_produced(http: httpx.Client, model_name: str) -> None:
    body = {"model": model_name, "messages": SEA, "options": {"temperature": 0, "num_predict": 40}}
    before = scrape(http)
    arrivals, objs = [], []
    with http.stream("POST", "/api/chat", json=body) as r:
        assert r.headers["content-type"] == "application/x-ndjson"
        for line in r.iter_lines():
            arrivals.append(time.monotonic())
            objs.append(json.loads(line))
    decoding = objs[-1]["eval_duration"] / 1e9
    assert len(objs) > 10
    # buffered lines would arrive together at the end; here they spread over the decoding
    assert arrivals[-1] - arrivals[0] >= 0.5 * decoding > 0, (arrivals[-1] - arrivals[0], decoding)
    after = scrape(http)  # the wire metrics time NDJSON lines as they do SSE events
    assert grew(before, after, "streamchat_wire_first_byte_seconds_count") == 1
    assert grew(before, after, "streamchat_wire_chunk_gap_seconds_count") >= len(objs) - 1
    assert grew(before, after, "streamchat_http_requests_total", method="POST", route="/api/chat", status="200") == 1


def test_json_format_answers_one_object(client: ollama.Client, model_name: str) -> None:
    ask = [{"role": "user", "content": "Give a JSON object describing a cat."}]
    r = client.chat(model_name, messages=ask, format="json", options={"temperature": 0, "num_predict": 300})
    assert r.done_reason == "stop"
    assert isinstance(json.loads(r.message.content), dict)


class City(BaseModel):
    name: str
    country: str
    population: int = Field(ge=0)


def test_schema_format_answers_validate(client: ollama.Client, model_name: str) -> None:
    schema = City.model_json_schema()
    ask = [{"role": "user", "content": "Describe Paris."}]
    sampled = {"seed": 7, "num_predict": 300}
    chunks = client.chat(model_name, messages=ask, format=schema, stream=True, options=sampled)
    streamed = "".join(c.message.content for c in chunks)
    generated = client.generate(model_name, prompt="Describe Paris.", format=schema, options={**GREEDY, **sampled})
    for text in (streamed, generated.response):
        jsonschema.validate(json.loads(text), schema)
        City.model_validate_json(text)


def test_a_tool_call_arrives_whole_in_one_chunk_and_its_result_is_answered(
    client: ollama.Client, model_name: str
) -> None:
    kw = {"messages": ASK_WEATHER, "tools": [WEATHER], "options": {"temperature": 0, "num_predict": 60}}
    chunks = list(client.chat(model_name, stream=True, **kw))
    with_calls = [c for c in chunks if c.message.tool_calls]
    assert len(with_calls) == 1, "Ollama sends a call whole, once complete"
    (call,) = with_calls[0].message.tool_calls
    assert call.function.name == "get_weather"
    jsonschema.validate(dict(call.function.arguments), WEATHER["function"]["parameters"])
    assert "".join(c.message.content for c in chunks) == "" and chunks[-1].done_reason == "stop"
    whole = client.chat(model_name, **kw)
    assert [(c.function.name, dict(c.function.arguments)) for c in whole.message.tool_calls] == [
        (call.function.name, dict(call.function.arguments))
    ]
    result = {"role": "tool", "tool_name": "get_weather", "content": json.dumps({"celsius": 21, "sky": "sunny"})}
    follow = [*ASK_WEATHER, whole.message.model_dump(exclude_none=True), result]
    answer = client.chat(model_name, messages=follow, options={"temperature": 0, "num_predict": 24})
    assert answer.message.content.strip() and not answer.message.tool_calls


def test_num_predict_and_stop_shape_the_answer(client: ollama.Client, model_name: str) -> None:
    short = client.generate(model_name, prompt="Tell me about the sea.", options={"temperature": 0, "num_predict": 5})
    assert (short.eval_count, short.done_reason) == (5, "length")
    full = client.generate(model_name, prompt="Tell me about the sea.", options=GREEDY).response
    words = full.split()
    stop = words[len(words) // 2]
    cut = client.generate(model_name, prompt="Tell me about the sea.", options={**GREEDY, "stop": [stop]})
    assert cut.done_reason == "stop" and stop not in cut.response
    assert full.startswith(cut.response) and len(cut.response) < len(full)


def test_a_seed_makes_a_sampled_answer_repeatable(client: ollama.Client, model_name: str) -> None:
    options = {"temperature": 1.0, "seed": 1234, "num_predict": 16}
    first, second = (client.chat(model_name, messages=SEA, options=options).message.content for _ in range(2))
    assert first == second and first.strip()


def test_list_show_ps_and_version(base_url: str, client: ollama.Client, model_name: str) -> None:
    (listed,) = client.list().models
    assert listed.model == f"{model_name}:latest" and listed.size > 0 and len(listed.digest) == 64
    assert listed.details.format == "gguf" and listed.details.family == "llama"
    assert listed.details.parameter_size == "134.52M" and listed.details.quantization_level == "Q4_1"
    served = httpx.get(f"{base_url}/v1/models").json()["data"][0]["max_model_len"]
    shown = client.show(f"{model_name}:latest")
    assert shown.modelinfo["llama.context_length"] == served  # what this server serves, not the model's 8192
    assert "repeat_penalty" in shown.parameters and "<|im_start|>" in shown.template
    assert shown.capabilities == ["completion", "tools"]
    (running,) = client.ps().models
    assert running.model == listed.model and running.context_length == served
    version = httpx.get(f"{base_url}/api/version").json()["version"]
    assert all(part.isdigit() for part in version.split("."))


@pytest.mark.parametrize("call", ["chat", "generate", "show"])
def test_an_unknown_model_is_a_404_through_the_client(client: ollama.Client, call: str) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        if call == "chat":
            list(client.chat("llama3.2", messages=SEA, stream=True))
        elif call == "generate":
            client.generate("llama3.2", prompt="Hi")
        else:
            client.show("llama3.2")
    assert caught.value.status_code == 404 and "llama3.2" in caught.value.error


@pytest.mark.parametrize(
    "raw", [b"{not json", b"\xff\xfe\xfd", b'{"model": 5, "messages": "Hi"}', b'{"model": "x", "options": []}']
)
def test_hostile_bytes_get_ollamas_error_shape(base_url: str, raw: bytes) -> None:
    for path in ("/api/chat", "/api/generate"):
        assert_ollama_error(httpx.post(f"{base_url}{path}", content=raw, timeout=30), 400)


def _aborted(base_url: str) -> int:
    return httpx.get(f"{base_url}/health", timeout=30).json()["aborted"]


def test_a_client_that_leaves_mid_stream_aborts_its_request(base_url: str, model_name: str) -> None:
    before = _aborted(base_url)
    body = {"model": model_name, "messages": SEA, "options": {"num_predict": LONG_ANSWER}}
    with httpx.stream("POST", f"{base_url}/api/chat", json=body, timeout=120) as r:
        lines = r.iter_lines()
        assert json.loads(next(lines))["done"] is False
        next(lines)
    assert wait_for(lambda: _aborted(base_url) > before, timeout=30)


def test_a_client_that_stops_waiting_for_a_whole_answer_aborts_it(base_url: str, model_name: str) -> None:
    """Greedy, so the answer's length does not depend on the draws (about 300 tokens, 3 s alone):
    a sampled one once ended by itself within the client's patience and the test saw no timeout."""
    before = _aborted(base_url)
    options = {"num_predict": LONG_ANSWER, "temperature": 0}
    body = {"model": model_name, "messages": SEA, "stream": False, "options": options}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{base_url}/api/chat", json=body, timeout=httpx.Timeout(0.5, connect=5.0))
    assert wait_for(lambda: _aborted(base_url) > before, timeout=30)
