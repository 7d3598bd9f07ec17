"""Ollama's API in process (`tests/api/inprocess.py`): shapes, translation, refusals, keys.

The fake runner answers " hello" at every step, so lengths, shapes and counts are exact, and it
records every prompt it was fed, so the test sees what an Ollama request became. Bad input is
decided before the model runs. The model's own answers through the official client are in
`test_ollama.py`.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import ollama
import pytest

from streamchat.api.errors import APIError
from streamchat.api.model_slots import ExtraModels
from streamchat.api.ollama_models import served_models, use_model
from streamchat.api.ollama_requests import chat_messages, chat_request, generate_request
from streamchat.api.ollama_schemas import OllamaChatRequest, OllamaGenerateRequest, OllamaMessage
from streamchat.api.ollama_shapes import Answer, HeldCalls
from streamchat.api.ready import Ready
from streamchat.api.state import ModelInfo, ServerState
from streamchat.config import Settings
from streamchat.engine.types import Delta, FinishReason, GenerationRequest, TokenLogprob, Usage
from streamchat.models_file import ModelEntry
from tests.api.inprocess import ANSWER_WORD, MAX_MODEL_LEN, MODEL_NAME, InProcess, StartInProcess

CHAT, GENERATE = "/api/chat", "/api/generate"
HI = [{"role": "user", "content": "Hi"}]
BODY = {"model": MODEL_NAME, "messages": HI, "options": {"num_predict": 3}}
ONE = {"num_predict": 1}
STREAM_KEYS = {"model", "created_at", "message", "done"}
FINAL_KEYS = STREAM_KEYS | {"done_reason", "total_duration", "load_duration", "prompt_eval_count",
                            "prompt_eval_duration", "eval_count", "eval_duration"}  # fmt: skip


def assert_ollama_error(response: httpx.Response, status: int, *named: str) -> str:
    """Ollama's error shape, `{"error": "message"}`, with the expected status; returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    assert all(name in body["error"] for name in named), body["error"]
    return body["error"]


def lines(response: httpx.Response) -> list[dict]:
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.text.endswith("\n")
    return [json.loads(line) for line in response.text.splitlines()]


# -- what goes over the wire ----------------------------------------------------------------------


async def test_chat_streams_ndjson_lines_then_a_final_line_with_the_counts(inprocess: InProcess) -> None:
    objs = lines(await inprocess.client.post(CHAT, json=BODY))
    *tokens, last = objs
    assert [o["message"] for o in tokens] == [{"role": "assistant", "content": ANSWER_WORD}] * 2
    assert all(set(o) == STREAM_KEYS and o["done"] is False and o["model"] == MODEL_NAME for o in tokens)
    assert set(last) == FINAL_KEYS and last["done"] is True and last["done_reason"] == "length"
    assert last["message"] == {"role": "assistant", "content": ANSWER_WORD}  # the last token rides with the counts
    assert last["eval_count"] == 3 and last["prompt_eval_count"] == len(inprocess.runner.prompts[0])
    durations = [last[k] for k in ("total_duration", "prompt_eval_duration", "eval_duration")]
    assert all(isinstance(d, int) and d >= 0 for d in durations) and last["load_duration"] == 0
    assert last["total_duration"] >= last["prompt_eval_duration"] + last["eval_duration"]
    assert all(o["created_at"].endswith("Z") for o in objs)


async def test_not_streamed_is_the_stream_merged(inprocess: InProcess) -> None:
    whole = (await inprocess.client.post(CHAT, json={**BODY, "stream": False})).json()
    assert set(whole) == FINAL_KEYS
    assert whole["message"] == {"role": "assistant", "content": ANSWER_WORD * 3}
    assert (whole["done"], whole["done_reason"], whole["eval_count"]) == (True, "length", 3)
    gen = (await inprocess.client.post(GENERATE, json={"model": MODEL_NAME, "prompt": "Hi", "stream": False,
                                                       "options": {"num_predict": 2}})).json()  # fmt: skip
    assert set(gen) == (FINAL_KEYS - {"message"}) | {"response"} and gen["response"] == ANSWER_WORD * 2


async def test_nothing_to_answer_is_ollamas_load_answer(inprocess: InProcess) -> None:
    chat = (await inprocess.client.post(CHAT, json={"model": MODEL_NAME})).json()
    assert chat["done"] is True and chat["done_reason"] == "load"
    assert chat["message"] == {"role": "assistant", "content": ""}
    gen = (await inprocess.client.post(GENERATE, json={"model": MODEL_NAME, "prompt": ""})).json()
    assert (gen["response"], gen["done"], gen["done_reason"]) == ("", True, "load")
    assert inprocess.runner.prompts == [], "loading asks nothing of the model"


async def test_logprobs_come_with_each_token(inprocess: InProcess) -> None:
    body = {**BODY, "logprobs": True, "top_logprobs": 2, "stream": False}
    whole = (await inprocess.client.post(CHAT, json=body)).json()
    assert len(whole["logprobs"]) == 3
    for lp in whole["logprobs"]:
        assert lp["token"] == ANSWER_WORD and lp["logprob"] == pytest.approx(0.0, abs=1e-6)
        assert bytes(lp["bytes"]).decode() == ANSWER_WORD and len(lp["top_logprobs"]) == 2
    streamed = lines(await inprocess.client.post(CHAT, json={**body, "stream": True}))
    assert [lp for o in streamed for lp in o["logprobs"]] == whole["logprobs"]
    assert "logprobs" not in (await inprocess.client.post(CHAT, json={**BODY, "stream": False})).json()


async def test_a_failure_after_the_start_ends_the_stream_with_an_error_line(inprocess: InProcess) -> None:
    forward, calls = inprocess.runner.forward, []

    def failing(*args, **kwargs):  # the first step (prefill and a decode) works, the next one fails
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("the device fell over")
        return forward(*args, **kwargs)

    inprocess.runner.forward = failing  # type: ignore[method-assign]
    objs = lines(await inprocess.client.post(CHAT, json={**BODY, "options": {"num_predict": 8}}))
    assert objs[0]["message"]["content"] == ANSWER_WORD and objs[0]["done"] is False
    assert set(objs[-1]) == {"error"} and "the device fell over" in objs[-1]["error"]
    assert not any(o.get("done") for o in objs), "a failed answer never says done"
    calls.clear()
    whole = await inprocess.client.post(CHAT, json={**BODY, "stream": False, "options": {"num_predict": 8}})
    assert "the device fell over" in assert_ollama_error(whole, 500)


# -- what reaches the model -----------------------------------------------------------------------


async def test_generate_puts_the_prompt_in_the_chat_template_and_raw_does_not(inprocess: InProcess) -> None:
    body = {"model": MODEL_NAME, "prompt": "Name a colour.", "system": "Be brief.", "stream": False, "options": ONE}
    assert (await inprocess.client.post(GENERATE, json=body)).status_code == 200
    templated = inprocess.tokenizer.decode(inprocess.runner.prompts[-1])
    assert templated == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n"
    )
    raw = {"model": MODEL_NAME, "prompt": "Roses are red,", "raw": True, "stream": False, "options": ONE}
    assert (await inprocess.client.post(GENERATE, json=raw)).status_code == 200
    assert inprocess.tokenizer.decode(inprocess.runner.prompts[-1]) == "Roses are red,"


async def test_tool_turns_without_ids_reach_the_model_as_calls_and_results(inprocess: InProcess) -> None:
    messages = [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                {"function": {"name": "get_time", "arguments": {"city": "Rome"}}},
            ],
        },  # fmt: skip
        {"role": "tool", "tool_name": "get_weather", "content": "21 °C"},
        {"role": "tool", "content": "12:00"},
    ]
    r = await inprocess.client.post(CHAT, json={**BODY, "messages": messages})  # the fake model takes no grammar
    assert r.status_code == 200, r.text
    fed = inprocess.fed_text()
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in fed
    assert '<tool_call>\n{"name": "get_time", "arguments": {"city": "Rome"}}\n</tool_call>' in fed
    assert "<tool_response>\n21 °C\n</tool_response>" in fed and "<tool_response>\n12:00\n</tool_response>" in fed


def test_tool_results_answer_the_calls_in_order_and_by_name() -> None:
    call = {"function": {"name": "f", "arguments": {"x": "é"}}}
    messages = [
        OllamaMessage(
            role="assistant",
            tool_calls=[call, {**call, "function": {"name": "g", "arguments": {}}}, {**call, "id": "given"}],
        ),  # fmt: skip
        OllamaMessage(role="tool", tool_name="g", content="G"),
        OllamaMessage(role="tool", content="F"),
        OllamaMessage(role="tool", tool_call_id="given", content="H"),
        OllamaMessage(role="tool", content="orphan"),
    ]
    out = chat_messages(messages)
    assert [c["id"] for c in out[0]["tool_calls"]] == ["call_0_0", "call_0_1", "given"]
    assert out[0]["tool_calls"][0]["function"]["arguments"] == '{"x": "é"}'
    assert [m["tool_call_id"] for m in out[1:]] == ["call_0_1", "call_0_0", "given", "call_4"]


def test_options_become_the_sampling_settings_and_unset_ones_keep_the_models_defaults() -> None:
    options = {"temperature": 0.3, "top_p": 0.8, "top_k": 7, "min_p": 0.05, "seed": 42, "num_predict": 9,
               "stop": ["\n\n"], "repeat_penalty": 1.2, "presence_penalty": 0.5, "frequency_penalty": 0.25}  # fmt: skip
    wanted = chat_request(OllamaChatRequest(model="m", messages=HI, options=options), MAX_MODEL_LEN)
    p = wanted.sampling(wanted.requested_max_tokens, defaults={"temperature": 0.9, "repetition_penalty": 1.15})
    assert (p.temperature, p.top_p, p.top_k, p.min_p, p.seed, p.max_tokens) == (0.3, 0.8, 7, 0.05, 42, 9)
    assert (p.stop, p.repetition_penalty, p.presence_penalty, p.frequency_penalty) == (("\n\n",), 1.2, 0.5, 0.25)
    plain = chat_request(OllamaChatRequest(model="m", messages=HI, options={"seed": -1, "num_predict": -1}), 99)
    q = plain.sampling(50, defaults={"temperature": 0.9, "repetition_penalty": 1.15})
    assert (q.temperature, q.repetition_penalty, q.seed, plain.requested_max_tokens) == (0.9, 1.15, None, None)
    raw = generate_request(OllamaGenerateRequest(model="m", prompt="x", raw=True, options={"stop": "."}), 99)
    assert raw.prompt == "x" and raw.stop == ["."]


# -- refusals ------------------------------------------------------------------------------------

REFUSED_OPTIONS = [
    ({"mirostat": 2}, "options.mirostat"),
    ({"typical_p": 0.5}, "options.typical_p"),
    ({"tfs_z": 0.9}, "options.tfs_z"),
    ({"repeat_last_n": 64}, "options.repeat_last_n"),
    ({"num_ctx": MAX_MODEL_LEN + 1}, "options.num_ctx"),
    ({"num_predict": 0}, "options.num_predict"),
    ({"num_predict": -3}, "options.num_predict"),
    ({"temperature": "hot"}, "options.temperature"),
    ({"temperature": 2.5}, "options.temperature"),
    ({"top_p": 0}, "options.top_p"),
    ({"stop": [""]}, "options.stop"),
    ({"stop": 5}, "options.stop"),
]


@pytest.mark.parametrize(("options", "named"), REFUSED_OPTIONS, ids=[n for _, n in REFUSED_OPTIONS])
async def test_options_that_would_change_the_answer_unhonoured_are_refused(
    inprocess: InProcess, options: dict, named: str
) -> None:
    assert_ollama_error(await inprocess.client.post(CHAT, json={**BODY, "options": options}), 400, named)
    assert inprocess.runner.prompts == [], "a refused request reached the engine"


async def test_options_that_change_nothing_here_are_accepted(inprocess: InProcess) -> None:
    harmless = {"num_predict": 1, "num_thread": 4, "num_gpu": 99, "main_gpu": 0, "use_mmap": True, "num_batch": 512,
                "num_keep": 4, "mirostat": 0, "mirostat_tau": 5.0, "typical_p": 1.0, "tfs_z": 1.0,
                "repeat_last_n": -1, "penalize_newline": True, "some_future_option": 1}  # fmt: skip
    r = await inprocess.client.post(CHAT, json={**BODY, "options": harmless, "keep_alive": "5m", "stream": False})
    assert r.status_code == 200, r.text
    assert r.json()["message"]["content"] == ANSWER_WORD


async def test_num_ctx_bounds_prompt_and_answer_together(inprocess: InProcess) -> None:
    first = (await inprocess.client.post(CHAT, json={**BODY, "stream": False})).json()
    prompt = first["prompt_eval_count"]
    body = {**BODY, "stream": False, "options": {"num_ctx": prompt + 2}}
    capped = (await inprocess.client.post(CHAT, json=body)).json()
    assert (capped["eval_count"], capped["done_reason"]) == (2, "length")
    too_small = {**BODY, "options": {"num_ctx": prompt}}
    assert_ollama_error(await inprocess.client.post(CHAT, json=too_small), 400, "options.num_ctx")
    too_long = {**BODY, "options": {"num_ctx": prompt + 2, "num_predict": 3}}
    assert_ollama_error(await inprocess.client.post(CHAT, json=too_long), 400, "options.num_ctx")


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
BAD = [
    (CHAT, {"messages": HI}, 400, "model"),
    (CHAT, {**BODY, "model": ""}, 400, "model"),
    (CHAT, {**BODY, "model": "llama3.2"}, 404, "llama3.2"),
    (CHAT, {**BODY, "model": f"{MODEL_NAME}:7b"}, 404, f"{MODEL_NAME}:7b"),
    (CHAT, {**BODY, "messages": "Hi"}, 400, "messages"),
    (CHAT, {**BODY, "messages": [{"role": "robot", "content": "Hi"}]}, 400, "role"),
    (CHAT, {**BODY, "messages": [{"role": "user", "content": 5}]}, 400, "content"),
    (CHAT, {**BODY, "messages": [{"role": "user", "content": "Hi", "images": ["aGk="]}]}, 400, "images"),
    (CHAT, {**BODY, "stream": [1]}, 400, "stream"),
    (CHAT, {**BODY, "think": True}, 400, "thinking"),
    (CHAT, {**BODY, "think": "deep"}, 400, "think"),
    (CHAT, {**BODY, "format": "xml"}, 400, "format"),
    (CHAT, {**BODY, "format": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}, 400, "format"),
    (CHAT, {**BODY, "format": "json", "tools": [TOOL]}, 400, "format"),
    (CHAT, {**BODY, "tools": [{"type": "function", "function": {"name": "bad name"}}]}, 400, "tools"),
    (CHAT, {**BODY, "tools": [TOOL, TOOL]}, 400, "tool names"),
    (CHAT, {**BODY, "top_logprobs": 21}, 400, "top_logprobs"),
    (GENERATE, {"model": MODEL_NAME, "prompt": "Hi", "suffix": "!"}, 400, "suffix"),
    (GENERATE, {"model": MODEL_NAME, "prompt": "Hi", "template": "{{ .Prompt }}"}, 400, "template"),
    (GENERATE, {"model": MODEL_NAME, "prompt": "Hi", "context": [1, 2, 3]}, 400, "context"),
    (GENERATE, {"model": MODEL_NAME, "prompt": "Hi", "images": ["aGk="]}, 400, "images"),
    (GENERATE, {"model": MODEL_NAME, "prompt": "Hi", "raw": True, "system": "Be brief."}, 400, "raw"),
    (GENERATE, {"model": MODEL_NAME, "prompt": 5}, 400, "prompt"),
    ("/api/show", {}, 400, "model"),
    ("/api/show", {"model": "llama3.2"}, 404, "llama3.2"),
]


@pytest.mark.parametrize(("path", "body", "status", "named"), BAD, ids=[f"{p} {n}" for p, _, _, n in BAD])
async def test_bad_requests_get_ollamas_error_shape(
    inprocess: InProcess, path: str, body: dict, status: int, named: str
) -> None:
    assert_ollama_error(await inprocess.client.post(path, json=body), status, named)
    assert inprocess.runner.prompts == [], "a refused request reached the engine"


@pytest.mark.parametrize(
    "raw",
    [b"{", b'{"model": "x", "messages": [}', b"\xff\xfe\x00garbage", b'{"model": "\xc3\x28"}', b"", b"[]", b"null"],
)
async def test_unparseable_bodies_are_400s_in_ollamas_shape(inprocess: InProcess, raw: bytes) -> None:
    for path in (CHAT, GENERATE, "/api/show"):
        r = await inprocess.client.post(path, content=raw, headers={"content-type": "application/json"})
        assert_ollama_error(r, 400)


async def test_model_names_answer_with_and_without_the_latest_tag(inprocess: InProcess) -> None:
    for name in (MODEL_NAME, f"{MODEL_NAME}:latest", MODEL_NAME.upper(), f"{MODEL_NAME}:LATEST"):
        r = await inprocess.client.post(CHAT, json={**BODY, "model": name, "stream": False})
        assert r.status_code == 200, r.text
        assert r.json()["model"] == name  # echoed as sent, as Ollama does
    tags = (await inprocess.client.get("/api/tags")).json()["models"]
    assert [m["name"] for m in tags] == [f"{MODEL_NAME}:latest"]


# -- keys -----------------------------------------------------------------------------------------


async def test_keys_through_the_ollama_client(start_inprocess: StartInProcess) -> None:
    async with start_inprocess(Settings(api_key=["right-key"])) as server:

        def client(**headers: str) -> ollama.AsyncClient:
            return ollama.AsyncClient(
                host="http://test", transport=httpx.ASGITransport(app=server.app), headers=headers
            )

        good = client(Authorization="Bearer right-key")
        answer = await good.chat(MODEL_NAME, messages=HI, options={"num_predict": 2})
        assert answer.message.content == ANSWER_WORD * 2 and answer.done_reason == "length"
        assert [m.model for m in (await good.list()).models] == [f"{MODEL_NAME}:latest"]
        for wrong in (client(Authorization="Bearer wrong-key"), client()):
            with pytest.raises(ollama.ResponseError) as caught:
                await wrong.chat(MODEL_NAME, messages=HI, options={"num_predict": 2})
            assert caught.value.status_code == 401 and caught.value.error
            with pytest.raises(ollama.ResponseError) as caught:
                await wrong.list()
            assert caught.value.status_code == 401
        for path in ("/api/version", "/api/tags", "/api/ps"):
            assert_ollama_error(await server.client.get(path), 401)
        assert len(server.runner.prompts) == 1, "only the request with the right key reached the engine"


# -- the shapes, without a server -----------------------------------------------------------------


def test_held_calls_send_text_at_once_and_each_call_whole_once_complete() -> None:
    held = HeldCalls()
    assert held.feed("It is <tool", final=False) == ("It is ", [])  # "<tool" may open a call: held back
    assert held.feed('_call>\n{"name": "get_weather", "arguments": {"city": "Pa', final=False) == ("", [])
    content, calls = held.feed('ris"}}\n</tool_call>', final=False)
    assert content == ""
    (call,) = calls
    assert call["id"].startswith("call_")
    assert call["function"] == {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}
    content, calls = held.feed('\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>', final=True)
    assert content == "" and [c["function"]["index"] for c in calls] == [1]
    assert held.feed("", final=True) == ("", [])


def test_a_call_cut_short_by_the_length_limit_is_never_sent() -> None:
    held = HeldCalls()
    assert held.feed('<tool_call>\n{"name": "f", "arguments": {"a": [1, 2', final=True) == ("", [])
    assert HeldCalls().feed("No call: <tool", final=True) == ("No call: <tool", [])


def test_the_answer_merges_into_what_was_streamed() -> None:
    request = GenerationRequest([1, 2, 3], arrival_time=100.0)
    answer = Answer("m:latest", chat=True, request=request, started=99.0, logprobs=True)
    lp = TokenLogprob("A", -0.5, [65], (("A", -0.5, [65]),))
    deltas = [
        Delta("A", (65,), logprobs=(lp,)),
        Delta("", (66,)),  # a token that completes no character yet
        Delta("é", (67,), FinishReason.STOP, Usage(3, 3, queue_time=0.5), (lp,)),
    ]
    chunks = [answer.chunk(d) for d in deltas]
    assert chunks[1] is None
    streamed = [c for c in chunks if c is not None]
    whole = answer.whole(streamed)
    assert whole["message"] == {"role": "assistant", "content": "Aé"} and whole["done_reason"] == "stop"
    assert whole["logprobs"] == [{"token": "A", "logprob": -0.5, "bytes": [65],
                                  "top_logprobs": [{"token": "A", "logprob": -0.5, "bytes": [65]}]}] * 2  # fmt: skip
    assert (whole["prompt_eval_count"], whole["eval_count"]) == (3, 3)


# -- several models (--models-file) ---------------------------------------------------------------


class _Engine:
    alive = True
    num_pending = 0


def _info(name: str) -> ModelInfo:
    return ModelInfo(name, 512, None, 0)


async def test_ollama_names_pick_among_several_models_and_wait_for_a_lazy_one() -> None:
    state = ServerState(Settings())
    state.engine, state.model = _Engine(), _info("Default")  # type: ignore[assignment]
    state.extra_models = ExtraModels([ModelEntry("qwen:0.5b", Settings()), ModelEntry("lazy", Settings(), True, 60)])
    ready_slot, lazy_slot = state.extra_models.slots.values()
    ready_slot.status, ready_slot.engine, ready_slot.info = "ready", _Engine(), _info("qwen:0.5b")  # type: ignore[assignment]

    async def load() -> None:  # stands in for building an engine
        await asyncio.sleep(0.05)
        lazy_slot.status, lazy_slot.engine, lazy_slot.info = "ready", _Engine(), _info("lazy")  # type: ignore[assignment]

    lazy_slot.load = load  # type: ignore[method-assign]
    assert [(m.name, m.info is not None) for m in served_models(state)] == [
        ("Default", True), ("qwen:0.5b", True), ("lazy", False)
    ]  # fmt: skip
    for asked, picked in [("QWEN:0.5b", "qwen:0.5b"), ("default:latest", "Default"), ("lazy:latest", "lazy")]:
        ready = Ready(state, state.engine, state.model)
        await use_model(ready, asked)
        assert ready.model.name == picked
    assert lazy_slot.status == "ready", "the request waited for the load instead of getting a 503"
    for unknown in ("qwen", "qwen:7b", "Default:v2"):
        with pytest.raises(APIError) as caught:
            await use_model(Ready(state, state.engine, state.model), unknown)
        assert caught.value.status == 404 and "'Default', 'qwen:0.5b', 'lazy'" in caught.value.message
