"""Requests refused before the model: while it loads, for a model the server does not serve, at
capacity, and over a key's share of requests in flight. None of them may reach the engine.

In process (`tests/api/inprocess.py`): the fake runner records every prompt the engine prefilled,
and holding its forwards keeps accepted requests in flight as long as a test needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import httpx
import pytest

from streamchat.api.app import create_app
from streamchat.api.state import ServerState
from streamchat.config import Settings
from tests.api.inprocess import (
    ANSWER_WORD,
    MODEL_NAME,
    WAIT_S,
    InProcess,
    StartInProcess,
    at_once,
    holding,
    wait_until,
)
from tests.support import assert_error

CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "hi"}]

MODEL_ROUTES = [
    ("POST", CHAT, {"messages": HI, "max_tokens": 2}),
    ("POST", "/v1/completions", {"prompt": "hi", "max_tokens": 2}),
    ("GET", "/v1/models", None),
    ("GET", f"/v1/models/{MODEL_NAME}", None),
    ("POST", "/stream", {"prompt": "hi"}),
    ("GET", "/stream?prompt=hi", None),
    ("POST", "/", {"prompt": "hi"}),
]


def not_loaded_client(settings: Settings) -> tuple[httpx.AsyncClient, ServerState]:
    """The app as it is before its model has loaded: the lifespan, which starts the load, is not run."""
    app = create_app(settings)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
    return client, app.state.streamchat


@pytest.mark.parametrize(("method", "path", "body"), MODEL_ROUTES)
async def test_every_model_route_answers_503_model_loading_until_the_model_is_there(
    method: str, path: str, body: dict | None
) -> None:
    client, state = not_loaded_client(Settings())
    async with client:
        r = await client.request(method, path, json=body)
        health = await client.get("/health")
    assert state.engine is None
    error = assert_error(r, 503)
    assert error["code"] == "model_loading" and error["type"] == "service_unavailable", error
    assert r.headers["retry-after"] == "5"
    assert health.status_code == 503 and health.json() == {"status": "loading"}


async def test_a_model_that_failed_to_load_is_named_in_the_503() -> None:
    client, state = not_loaded_client(Settings())
    state.load_error = "no such file: /models/missing.gguf"  # what the background load records on failure
    async with client:
        r = await client.post(CHAT, json={"messages": HI})
        health = await client.get("/health")
    error = assert_error(r, 503)
    assert error["code"] == "model_load_failed" and "/models/missing.gguf" in error["message"], error
    assert health.status_code == 503 and health.json() == {"status": "error", "error": state.load_error}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", CHAT, {"messages": HI, "model": "gpt-nope"}),
        ("POST", "/v1/completions", {"prompt": "hi", "model": "gpt-nope"}),
        ("GET", "/v1/models/gpt-nope", None),
    ],
)
async def test_a_wrong_model_name_is_404_model_not_found(
    inprocess: InProcess, method: str, path: str, body: dict | None
) -> None:
    r = await inprocess.client.request(method, path, json=body)
    error = assert_error(r, 404, param="model")
    assert error["code"] == "model_not_found", error
    assert "gpt-nope" in error["message"] and MODEL_NAME in error["message"], "names both models"
    assert inprocess.runner.prompts == [], "a request for another model reached the engine"


async def test_the_served_model_name_is_accepted(inprocess: InProcess) -> None:
    """The other side of the 404: the name `/v1/models` lists is the one requests may give."""
    (card,) = (await inprocess.client.get("/v1/models")).json()["data"]
    assert card["id"] == MODEL_NAME
    r = await inprocess.client.post(CHAT, json={"messages": HI, "model": MODEL_NAME, "max_tokens": 3})
    assert r.status_code == 200, r.text
    assert r.json()["model"] == MODEL_NAME
    assert r.json()["choices"][0]["message"]["content"] == ANSWER_WORD * 3
    assert len(inprocess.runner.prompts) == 1


async def test_429_queue_full_once_max_num_seqs_plus_max_queue_are_in_flight(
    start_inprocess: StartInProcess,
) -> None:
    """Two running and two waiting fill the server; the fifth is refused and never queued."""
    async with start_inprocess(Settings(max_num_seqs=2, max_queue=2)) as server:

        def ask(question: str) -> Coroutine[Any, Any, httpx.Response]:
            return server.client.post(CHAT, json={"messages": [{"role": "user", "content": question}], "max_tokens": 2})

        accepted = [f"question {i}" for i in range(4)]
        sends = [lambda q=q: ask(q) for q in accepted]
        async with holding(server, sends) as held:
            health = (await server.client.get("/health")).json()
            assert health["running"] + health["waiting"] == 4, health
            refused = await at_once(ask("zebra crossing"))
            error = assert_error(refused, 429)
            assert error["code"] == "queue_full" and error["type"] == "rate_limit_error", error
            assert refused.headers["retry-after"] == "1"
            assert "2 running and 2 waiting" in error["message"]
        assert [task.result().status_code for task in held] == [200] * 4
        assert len(server.runner.prompts) == 4
        fed = server.fed_text()
        assert all(q in fed for q in accepted) and "zebra" not in fed, fed
        assert server.engine.num_pending == 0


async def test_429_concurrency_limit_per_key_leaves_other_keys_alone(start_inprocess: StartInProcess) -> None:
    """Key A has its two requests in flight: its third is refused at once, while key B's second is
    admitted (it joins the requests in flight), and the refused one never reached the engine."""
    settings = Settings(api_key=["key-a", "key-b"], max_concurrent_per_key=2, max_num_seqs=4, max_queue=4)
    async with start_inprocess(settings) as server:

        def ask(key: str, question: str) -> Coroutine[Any, Any, httpx.Response]:
            body = {"messages": [{"role": "user", "content": question}], "max_tokens": 2}
            return server.client.post(CHAT, json=body, headers={"Authorization": f"Bearer {key}"})

        held_requests = [
            lambda: ask("key-a", "first of a"),
            lambda: ask("key-a", "second of a"),
            lambda: ask("key-b", "first of b"),
        ]
        async with holding(server, held_requests) as held:
            refused = await at_once(ask("key-a", "zebra of a"))
            error = assert_error(refused, 429)
            assert error["code"] == "concurrency_limit_exceeded" and "limit 2" in error["message"], error
            assert refused.headers["retry-after"] == "1"
            second_of_b = asyncio.create_task(ask("key-b", "second of b"))
            assert await wait_until(lambda: server.engine.num_pending == 4), "key B's second was not admitted"
        responses = [task.result() for task in held] + [await asyncio.wait_for(second_of_b, WAIT_S)]
        assert [r.status_code for r in responses] == [200] * 4
        assert [r.json()["choices"][0]["message"]["content"] for r in responses] == [ANSWER_WORD * 2] * 4
        assert len(server.runner.prompts) == 4 and "zebra" not in server.fed_text()
        again = await ask("key-a", "after the others")
        assert again.status_code == 200, "the key's slots came back when its requests finished"


async def test_models_show_the_sampling_defaults_requests_get(start_inprocess: StartInProcess) -> None:
    async with start_inprocess(Settings(sampling_defaults="repetition_penalty=1.1, top_k=40")) as server:
        card = (await server.client.get("/v1/models")).json()["data"][0]
    assert card["sampling_defaults"] == {"repetition_penalty": 1.1, "top_k": 40}
