"""A model that answers through its own stream_chat, served for real over loopback.

`python -m streamchat serve --model <tiny ChatGLM-shaped folder> --trust-remote-code`: every
protocol streams its answer (Chinese and a 4-byte emoji, whole characters only), history carries
across turns, a client that leaves stops the model's own loop, and the event loop stays free
while the model works. The model records each call in its progress file (see `tiny_glm.py`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import running_server
from tests.engine.remote_code.tiny_glm import write_tiny_glm
from tests.support import assert_error, parse_sse, wait_for

STEP_DELAY_S = 0.01  # per token: short answers take ~0.2 s, long ones as long as a test needs
LONG = "long"  # a question with this in it gets a long answer (see tiny_glm.answer_for)


def expected(query: str, round_number: int = 1) -> str:
    """The tiny model's answer, after ChatGLM's own clean-up turned "OK," into "OK，"."""
    return f"第{round_number}轮。OK，你问：{query}🌊"


@dataclass
class Call:
    start: dict
    steps: int = 0
    end: dict | None = None


@dataclass
class GLMServer:
    url: str
    progress: Path

    def calls(self) -> list[Call]:
        calls: list[Call] = []
        for line in self.progress.read_text(encoding="utf-8").splitlines(keepends=True):
            if not line.endswith("\n"):  # being written by the server as we read
                break
            event = json.loads(line)
            if event["event"] == "start":
                calls.append(Call(event))
            elif event["event"] == "step":
                calls[-1].steps += 1
            else:
                calls[-1].end = event
        return calls

    def call(self, query: str) -> Call:
        found = [c for c in self.calls() if c.start["query"] == query]
        assert found, f"the model was never asked {query!r}"
        return found[-1]


@pytest.fixture(scope="module")
def glm(tmp_path_factory: pytest.TempPathFactory, glm_tokenizer) -> Iterator[GLMServer]:
    root = tmp_path_factory.mktemp("tinyglm")
    progress = root / "progress.jsonl"
    folder = write_tiny_glm(root / "tinyglm", glm_tokenizer, step_delay=STEP_DELAY_S, progress_file=progress)
    flags = ["--model", str(folder), "--trust-remote-code", "--ping-interval", "1", "--resume-grace", "1",
             "--log-level", "warning"]  # fmt: skip
    with running_server(root, *flags) as server:
        yield GLMServer(server.url, progress)


@pytest.fixture
def http(glm: GLMServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=glm.url, timeout=30) as client:
        yield client


@pytest.fixture
def oai(glm: GLMServer) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=f"{glm.url}/v1", api_key="unused", timeout=30, max_retries=0)
    yield client
    client.close()


def seed_texts(body: str) -> list[str]:
    events = parse_sse(body).events
    assert events[-1].data == "[DONE]"
    return [json.loads(e.data)["text"] for e in events[:-1]]


def test_get_stream_sends_whole_characters_piece_by_piece(http: httpx.Client) -> None:
    texts = seed_texts(http.get("/stream", params={"prompt": "你好世界"}).text)
    assert "".join(texts) == expected("你好世界")
    assert len(texts) > 5  # streamed, not one piece
    assert all("\ufffd" not in t for t in texts)


def test_post_stream_with_history_answers_the_next_round(http: httpx.Client, glm: GLMServer) -> None:
    history = [["第一问", expected("第一问")]]
    resp = http.post("/stream", json={"prompt": "第二问", "history": history})
    assert "".join(seed_texts(resp.text)) == expected("第二问", 2)
    assert glm.call("第二问").start["history"] == history


def test_chatglm_api_keeps_history_across_turns(http: httpx.Client, glm: GLMServer) -> None:
    first = http.post("/", json={"prompt": "一号问题", "history": []}).json()
    assert first["status"] == 200 and first["response"] == expected("一号问题")
    second = http.post("/", json={"prompt": "二号问题", "history": first["history"]}).json()
    assert second["response"] == expected("二号问题", 2)
    assert second["history"] == [["一号问题", expected("一号问题")], ["二号问题", expected("二号问题", 2)]]
    call = glm.call("二号问题")
    assert call.start["history"] == [["一号问题", expected("一号问题")]]
    assert (call.start["do_sample"], call.start["temperature"], call.start["top_p"]) == (True, 0.95, 0.7)


def test_openai_sdk_streams_a_conversation_with_its_settings_passed(oai: openai.OpenAI, glm: GLMServer) -> None:
    messages = [
        {"role": "system", "content": "用中文回答。"},
        {"role": "user", "content": "天气"},
        {"role": "assistant", "content": "晴"},
        {"role": "user", "content": "明天呢"},
    ]
    stream = oai.chat.completions.create(
        model="tinyglm", messages=messages, stream=True, temperature=0.3, top_p=0.5, max_tokens=100,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(pieces) == expected("明天呢", 2)
    assert all("\ufffd" not in p for p in pieces)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    call = glm.call("明天呢")
    assert call.start["history"] == [["用中文回答。\n\n天气", "晴"]]  # the system prompt opens the first question
    assert (call.start["do_sample"], call.start["temperature"], call.start["top_p"]) == (True, 0.3, 0.5)
    usage = chunks[-1].usage
    assert usage.prompt_tokens == call.start["prompt_tokens"]  # what the model's own prompt holds
    assert call.start["max_length"] == usage.prompt_tokens + 100


def test_openai_greedy_length_and_stop(oai: openai.OpenAI, glm: GLMServer) -> None:
    cut = oai.chat.completions.create(
        model="tinyglm", messages=[{"role": "user", "content": "短一点"}], max_tokens=3, temperature=0
    )
    assert cut.choices[0].finish_reason == "length"
    assert glm.call("短一点").start["do_sample"] is False
    stopped = oai.chat.completions.create(
        model="tinyglm", messages=[{"role": "user", "content": "停在这里"}], stop=["你问"]
    )
    assert stopped.choices[0].message.content == "第1轮。OK，"
    assert stopped.choices[0].finish_reason == "stop"
    assert glm.call("停在这里").end["how"] == "closed"  # the model's loop was stopped at the stop string


def test_a_completion_prompt_is_asked_as_one_question(oai: openai.OpenAI) -> None:
    done = oai.completions.create(model="tinyglm", prompt="补全这个", max_tokens=100)
    assert done.choices[0].text == expected("补全这个")


def test_settings_stream_chat_cannot_honour_are_refused_with_400(http: httpx.Client) -> None:
    body = {"model": "tinyglm", "messages": [{"role": "user", "content": "q"}], "stream": True}
    assert_error(http.post("/v1/chat/completions", json={**body, "top_k": 5}), 400, "top_k")
    assert_error(http.post("/v1/chat/completions", json={**body, "logprobs": True}), 400, "logprobs")
    json_only = {**body, "response_format": {"type": "json_object"}}
    assert_error(http.post("/v1/chat/completions", json=json_only), 400, "response_format")
    ends_with_answer = {**body, "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    assert_error(http.post("/v1/chat/completions", json=ends_with_answer), 400, "messages")


def _read_some_then_leave(http: httpx.Client, params: dict, events: int = 3) -> None:
    with http.stream("GET", "/stream", params=params) as resp:
        seen = 0
        for line in resp.iter_lines():
            if line.startswith("data:"):
                seen += 1
                if seen >= events:
                    break


def _stopped(glm: GLMServer, query: str) -> bool:
    calls = [c for c in glm.calls() if c.start["query"] == query]  # none yet: not started
    return bool(calls) and calls[-1].end is not None and calls[-1].end["how"] == "closed"


def test_a_client_that_leaves_stops_the_models_loop(http: httpx.Client, glm: GLMServer) -> None:
    query = f"{LONG} 断开"
    _read_some_then_leave(http, {"prompt": query, "max_length": 1500, "resumable": "false"})
    assert wait_for(lambda: _stopped(glm, query), 5), glm.call(query)
    steps = glm.call(query).steps
    time.sleep(0.3)
    assert glm.call(query).steps == steps < 500  # closed long before its answer's end, and stays closed


def test_a_resumable_stream_left_alone_stops_after_the_grace(glm: GLMServer) -> None:
    query = f"{LONG} 可续"
    body = {"model": "tinyglm", "messages": [{"role": "user", "content": query}], "stream": True, "max_tokens": 1000}
    with (
        httpx.Client(base_url=glm.url, timeout=30) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as resp,
    ):
        next(resp.iter_lines())
    assert wait_for(lambda: _stopped(glm, query), 6), glm.call(query)  # --resume-grace 1


def test_a_chatglm_api_client_that_times_out_stops_the_models_loop(glm: GLMServer) -> None:
    query = f"{LONG} 超时"
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{glm.url}/", json={"prompt": query, "history": [], "max_length": 1500}, timeout=0.5)
    assert wait_for(lambda: _stopped(glm, query), 5), glm.call(query)


def test_the_event_loop_stays_free_and_others_queue_while_the_model_works(glm: GLMServer) -> None:
    query, queued = f"{LONG} 占用", "排队"
    leave = threading.Event()

    def hold_a_stream() -> None:
        with (
            httpx.Client(base_url=glm.url, timeout=30) as client,
            client.stream("GET", "/stream", params={"prompt": query, "max_length": 1500, "resumable": "false"}) as resp,
        ):
            for _ in resp.iter_lines():
                if leave.is_set():
                    break

    holder = threading.Thread(target=hold_a_stream, daemon=True)
    holder.start()
    answer: dict = {}
    try:
        assert wait_for(lambda: any(c.start["query"] == query and c.steps > 5 for c in glm.calls()), 10)
        waiter = threading.Thread(
            target=lambda: answer.update(httpx.post(f"{glm.url}/", json={"prompt": queued}, timeout=30).json()),
            daemon=True,
        )
        waiter.start()
        with httpx.Client(base_url=glm.url, timeout=5) as client:
            for _ in range(5):
                started = time.monotonic()
                health = client.get("/health")
                assert time.monotonic() - started < 0.5, "the event loop was blocked"
                assert health.status_code == 200 and health.json()["running"] == 1
            assert wait_for(lambda: client.get("/health").json()["waiting"] == 1, 5)
        assert glm.call(query).end is None  # still answering the first
        assert not [c for c in glm.calls() if c.start["query"] == queued]  # the second has not started
    finally:
        leave.set()
        holder.join(10)
    waiter.join(10)
    assert answer["response"] == expected(queued)
    order = [c.start["query"] for c in glm.calls()]
    assert order.index(queued) == order.index(query) + 1 and glm.call(query).end["how"] == "closed"


def test_every_other_protocol_streams_the_same_answer(http: httpx.Client) -> None:
    """Anthropic's Messages, OpenAI's Responses and Ollama's chat take the one engine path too."""
    want = expected("你好世界")
    model = http.get("/v1/models").json()["data"][0]["id"]
    anthropic_body = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "你好世界"}],
                      "stream": True}  # fmt: skip
    raw = http.post("/v1/messages", json=anthropic_body).text
    events = parse_sse(raw).events
    text = "".join(json.loads(e.data)["delta"].get("text", "") for e in events if e.event == "content_block_delta")
    assert text == want, raw[:1500]
    events = parse_sse(http.post("/v1/responses", json={"input": "你好世界", "stream": True}).text).events
    deltas = [json.loads(e.data)["delta"] for e in events if e.event == "response.output_text.delta"]
    assert "".join(deltas) == want and events[-1].event == "response.completed"
    ollama_body = {"model": model, "messages": [{"role": "user", "content": "你好世界"}]}
    lines = http.post("/api/chat", json=ollama_body).text.splitlines()
    assert "".join(json.loads(line)["message"]["content"] for line in lines) == want
    assert json.loads(lines[-1])["done"] is True
