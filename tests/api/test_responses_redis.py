"""The Responses API store shared by two real servers on one real redis-server, through the
official `openai` SDK: what one process creates, another reads, chains, re-attaches to, cancels
and deletes, each key seeing only its own responses."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import running_server
from tests.redis_server import RedisServer, running_redis
from tests.support import LONG_ANSWER, assert_error

SHORT = {"temperature": 0, "max_output_tokens": 16}
FLAGS = ("--api-key", "k1,k2", "--max-num-seqs", "4", "--log-level", "warning")
CANCEL_PATIENCE_S = 10.0  # a cancel that waited for the server's 30 s patience did not reach the run


@dataclass
class Pair:
    redis: RedisServer
    a: str  # the servers' URLs
    b: str
    model: str


def folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    base = tmp_path_factory.mktemp("shared-responses")
    with running_redis(base / "redis") as store:
        flags = ("--stream-store", store.url, *FLAGS)
        with running_server(folder(base / "a"), *flags) as a, running_server(folder(base / "b"), *flags) as b:
            model = httpx.get(f"{a.url}/health", timeout=10).json()["model"]
            yield Pair(store, a.url, b.url, model)


def client(url: str, key: str = "k1") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, timeout=60.0, max_retries=0)


def test_a_response_created_on_one_process_is_retrieved_on_another(pair: Pair) -> None:
    created = client(pair.a).responses.create(model=pair.model, input="Name three colours.", **SHORT)
    seen = client(pair.b).responses.retrieve(created.id)
    assert seen.id == created.id and seen.status == created.status and seen.status in ("completed", "incomplete")
    assert seen.output_text == created.output_text and seen.output_text


def test_a_conversation_goes_on_through_another_process(pair: Pair) -> None:
    first = client(pair.a).responses.create(model=pair.model, input="My name is Ada.", **SHORT)
    second = client(pair.b).responses.create(
        model=pair.model, input="What is my name?", previous_response_id=first.id, **SHORT
    )
    alone = client(pair.b).responses.create(model=pair.model, input="What is my name?", **SHORT)
    assert second.previous_response_id == first.id and second.output_text
    assert second.usage.input_tokens > alone.usage.input_tokens + first.usage.output_tokens, "the first turn is there"


def test_a_background_response_reattaches_on_another_process(pair: Pair) -> None:
    started = client(pair.a).responses.create(
        model=pair.model, input="Tell a story about a cat.", background=True, temperature=0, max_output_tokens=64
    )
    b = client(pair.b)
    first = []
    with b.responses.retrieve(started.id, stream=True) as stream:
        for event in stream:
            first.append(event)
            if len(first) == 6:
                break  # the connection drops here
    rest = list(b.responses.retrieve(started.id, stream=True, starting_after=first[-1].sequence_number))
    events = first + rest
    assert [e.sequence_number for e in events] == list(range(len(events))), "every event once, in order"
    assert events[-1].type in ("response.completed", "response.incomplete")
    final = b.responses.retrieve(started.id)
    assert final.status == events[-1].response.status, "the ending is written through before it is sent"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == final.output_text


def test_a_background_response_is_cancelled_through_another_process(pair: Pair) -> None:
    a, b = client(pair.a), client(pair.b)
    started = a.responses.create(
        model=pair.model, input="Count to a thousand.", background=True, max_output_tokens=LONG_ANSWER
    )
    with b.responses.retrieve(started.id, stream=True) as stream:  # it runs: its first delta is out
        next(e for e in stream if e.type == "response.output_text.delta")
    sent = time.monotonic()
    cancelled = b.responses.cancel(started.id)
    assert cancelled.status == "cancelled" and time.monotonic() - sent < CANCEL_PATIENCE_S
    assert a.responses.retrieve(started.id).status == "cancelled"
    assert cancelled.usage.output_tokens < LONG_ANSWER


def test_a_response_deleted_through_one_process_is_gone_from_the_other(pair: Pair) -> None:
    a, b = client(pair.a), client(pair.b)
    created = a.responses.create(model=pair.model, input="hi", **SHORT)
    assert b.responses.delete(created.id) is None  # the SDK returns nothing on success
    with pytest.raises(openai.NotFoundError):
        a.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        b.responses.delete(created.id)


def test_another_key_sees_no_response_on_any_process(pair: Pair) -> None:
    created = client(pair.a).responses.create(model=pair.model, input="hi", **SHORT)
    with httpx.Client(base_url=pair.b, headers={"Authorization": "Bearer k2"}, timeout=60) as theirs:
        for method, path in [("GET", f"/v1/responses/{created.id}"), ("DELETE", f"/v1/responses/{created.id}"),
                             ("POST", f"/v1/responses/{created.id}/cancel")]:  # fmt: skip
            assert_error(theirs.request(method, path), 404)
        chained = {"input": "more", "previous_response_id": created.id, **SHORT}
        assert_error(theirs.post("/v1/responses", json=chained), 404, "previous_response_id")
    assert client(pair.b).responses.retrieve(created.id).id == created.id


def test_an_unreachable_redis_is_a_503_and_the_store_comes_back(pair: Pair) -> None:
    with httpx.Client(base_url=pair.b, headers={"Authorization": "Bearer k1"}, timeout=30) as http:
        pair.redis.stop()
        try:
            started = time.monotonic()
            for method, path, body in [("GET", "/v1/responses/resp_x", None), ("DELETE", "/v1/responses/resp_x", None),
                                       ("POST", "/v1/responses", {"input": "hi", **SHORT})]:  # fmt: skip
                error = assert_error(http.request(method, path, json=body), 503)
                assert error["code"] == "stream_store_unavailable"
            assert time.monotonic() - started < 15
            unstored = http.post("/v1/responses", json={"input": "hi", "store": False, **SHORT})
            assert unstored.status_code == 200, "a response that is not stored needs no store"
        finally:
            pair.redis.start()  # same address: the servers reconnect by themselves
        created = http.post("/v1/responses", json={"input": "hi", **SHORT})
        assert created.status_code == 200 and http.get(f"/v1/responses/{created.json()['id']}").status_code == 200
