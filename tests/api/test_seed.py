"""The seed's `/stream` (POST and GET) and ChatGLM-6B `api.py`'s `POST /`, on the wire."""

from __future__ import annotations

import datetime
import json
import re

import httpx

from tests.support import parse_sse

TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
# One unit of the stream: a keep-alive comment, or an event (an optional resumption id, one data line).
UNIT = re.compile(r": ping\n|(?:id: (?P<sid>[^\n:]+):(?P<seq>\d+)\n)?data: (?P<data>[^\n]*)\n\n")
ASK = {"prompt": "What is the capital of France?", "history": [], "temperature": 0, "top_p": 0.7}


def seed_texts(response: httpx.Response) -> list[str]:
    """Check every byte of a seed stream; return the `text` of each event."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    body = response.content.decode("utf-8")
    units, pos = [], 0
    while pos < len(body):
        m = UNIT.match(body, pos)
        assert m, f"unexpected bytes at {pos}: {body[pos : pos + 80]!r}"
        units.append(m)
        pos = m.end()
    events = [m for m in units if m["data"] is not None]
    assert events[-1]["data"] == "[DONE]" and units[-1] is events[-1]
    ids = [(m["sid"], m["seq"]) for m in events]
    if any(ids[0]):  # resumable streams number their events: <stream id>:0, :1, ...
        assert [sid for sid, _ in ids] == [response.headers["x-stream-id"]] * len(ids)
        assert [int(seq) for _, seq in ids] == list(range(len(ids)))
    texts = []
    for m in events[:-1]:
        obj = json.loads(m["data"])
        assert list(obj) == ["id", "time", "text"]
        assert obj["id"] == 0 and TIME.fullmatch(obj["time"])
        assert isinstance(obj["text"], str) and obj["text"]
        assert m["data"] == json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))
        texts.append(obj["text"])
    return texts


def test_post_stream_seed_shape(http: httpx.Client) -> None:
    texts = seed_texts(http.post("/stream", json=ASK))
    assert len(texts) >= 2
    assert "".join(texts).strip()


def test_get_stream_equals_post_stream(http: httpx.Client) -> None:
    posted = "".join(seed_texts(http.post("/stream", json=ASK)))
    params = {"prompt": ASK["prompt"], "history": "[]", "temperature": 0}
    assert "".join(seed_texts(http.get("/stream", params=params))) == posted


def test_get_stream_in_the_browser_way(http: httpx.Client) -> None:
    """What `EventSource` does: a plain GET with `Accept: text/event-stream`, the prompt in the query."""
    r = http.get("/stream", params={"prompt": "Say hello."}, headers={"accept": "text/event-stream"})
    parsed = parse_sse(r.text)
    assert parsed.events[-1].data == "[DONE]"
    assert all(json.loads(e.data)["text"] for e in parsed.events[:-1])


def test_chatglm_api_answer_and_history(http: httpx.Client) -> None:
    history = [["Hi, who are you?", "I am a helpful assistant."]]
    r = http.post("/", json={**ASK, "history": history, "max_length": 512})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert list(body) == ["response", "history", "status", "time"]
    assert body["status"] == 200
    assert isinstance(body["response"], str) and body["response"]
    assert body["history"] == [*history, [ASK["prompt"], body["response"]]]
    stamp = datetime.datetime.strptime(body["time"], "%Y-%m-%d %H:%M:%S")
    assert abs((datetime.datetime.now() - stamp).total_seconds()) < 120


def test_chatglm_api_equals_the_stream(http: httpx.Client) -> None:
    whole = http.post("/", json=ASK).json()["response"]
    assert "".join(seed_texts(http.post("/stream", json=ASK))) == whole


def test_max_length_counts_prompt_and_answer(http: httpx.Client, tokenizer) -> None:
    """`max_length` is prompt plus answer, as in api.py: a prompt that leaves 3 tokens gets at most 3."""
    from streamchat.chat.prompt import render, rounds_to_messages

    history = [["Hi, who are you?", "I am a helpful assistant."]]
    prompt_tokens = len(render(tokenizer, rounds_to_messages([], ASK["prompt"])))
    body = {**ASK, "history": history, "max_length": prompt_tokens + 3}
    texts = seed_texts(http.post("/stream", json=body))
    assert 1 <= len(texts) <= 3  # each event carries at least one token
    r = http.post("/", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["response"] == "".join(texts)
    assert r.json()["history"] == [*history, [ASK["prompt"], "".join(texts)]]
