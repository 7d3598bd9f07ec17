"""API keys on every model route, per-key limits, body and token ceilings.

In process, with the fake runner (`tests/api/inprocess.py`): keys, limits and ceilings are decided
before the model runs. Held forwards keep requests in flight for the in-flight and capacity limits.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamchat.api.auth import matches
from streamchat.config import Settings
from tests.api.inprocess import InProcess, StartInProcess, at_once, holding
from tests.support import assert_error

KEYS = ("alpha-key", "beta-key", "gamma-key", "delta-key", "epsilon-key")
RPM = 4
CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0}
JSON = {"content-type": "application/json"}


@pytest.fixture
async def locked(tmp_path: Path, start_inprocess: StartInProcess) -> AsyncIterator[InProcess]:
    """Keys from the flag and from a file; every limit and ceiling set low enough to reach."""
    key_file = tmp_path / "keys.txt"
    key_file.write_text(f"# operators' keys\n{KEYS[2]}\n\n", encoding="utf-8")
    settings = Settings(
        api_key=[*KEYS[:2], *KEYS[3:]],
        api_key_file=key_file,
        rate_limit_rpm=RPM,
        max_concurrent_per_key=1,
        max_body_bytes=4096,
        max_prompt_tokens=200,
        max_tokens_limit=16,
        max_num_seqs=1,
        max_queue=0,
        public_health=True,
        public_metrics=False,
    )
    async with start_inprocess(settings) as server:
        yield server


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def stream_of(server: InProcess, key: str) -> Coroutine[Any, Any, httpx.Response]:
    """A streamed chat request of `key`: held in flight while the runner is."""
    body = {**CHAT, "max_tokens": 16, "ignore_eos": True, "stream": True}
    return server.client.post("/v1/chat/completions", json=body, headers=bearer(key))


ROUTES = [
    ("POST", "/v1/chat/completions", CHAT),
    ("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 2}),
    ("GET", "/v1/models", None),
    ("POST", "/stream", {"prompt": "Hi", "max_length": 40}),
    ("GET", "/stream?prompt=Hi&max_length=40", None),
    ("POST", "/", {"prompt": "Hi", "max_length": 40}),
    ("GET", "/v1/streams/anything", None),
    ("DELETE", "/v1/streams/anything", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_every_model_route_needs_a_valid_key(
    locked: InProcess, method: str, path: str, body: dict | None
) -> None:
    missing = await locked.client.request(method, path, json=body)
    assert_error(missing, 401)
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"]["code"] == "missing_api_key"
    wrong = await locked.client.request(method, path, json=body, headers=bearer("alpha-kez"))
    assert assert_error(wrong, 401)["code"] == "invalid_api_key"
    assert locked.runner.prompts == [], "a request without a valid key reached the engine"


async def test_keys_from_the_flag_and_the_file_are_accepted_and_health_stays_public(locked: InProcess) -> None:
    for key in (KEYS[0], KEYS[2]):
        r = await locked.client.get("/v1/models", headers=bearer(key))
        assert r.status_code == 200, r.text
    assert (await locked.client.get("/health")).status_code == 200
    assert (await locked.client.get("/")).status_code == 200, "the page is public; it asks for the key"


async def test_event_source_can_pass_the_key_in_the_query(locked: InProcess) -> None:
    r = await locked.client.get(f"/stream?prompt=Hi&max_length=40&api_key={KEYS[0]}")
    assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")


async def test_requests_per_minute_are_limited_per_key(locked: InProcess) -> None:
    key = KEYS[1]
    codes = [await locked.client.get("/v1/models", headers=bearer(key)) for _ in range(RPM + 1)]
    assert [r.status_code for r in codes[:RPM]] == [200] * RPM
    refused = codes[RPM]
    assert assert_error(refused, 429)["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    other = await locked.client.get("/v1/models", headers=bearer(KEYS[2]))
    assert other.status_code == 200, "another key has its own budget"


async def test_requests_in_flight_are_limited_per_key(locked: InProcess) -> None:
    key = KEYS[2]
    async with holding(locked, [lambda: stream_of(locked, key)]) as held:
        second = await at_once(locked.client.post("/v1/chat/completions", json=CHAT, headers=bearer(key)))
        assert assert_error(second, 429)["code"] == "concurrency_limit_exceeded"
        assert second.headers["retry-after"] == "1"
    assert held[0].result().status_code == 200
    assert len(locked.runner.prompts) == 1, "only the held request reached the engine"


async def test_a_full_server_refuses_at_once_with_429_and_retry_after(locked: InProcess) -> None:
    """max_num_seqs 1, max_queue 0: while one request runs, the next is refused, not queued."""
    async with holding(locked, [lambda: stream_of(locked, KEYS[3])]) as held:
        refused = await at_once(locked.client.post("/v1/chat/completions", json=CHAT, headers=bearer(KEYS[4])))
        assert assert_error(refused, 429)["code"] == "queue_full"
        assert refused.headers["retry-after"] == "1"
        assert refused.elapsed.total_seconds() < 2.0, "a refusal must not wait for capacity"
        huge = {**CHAT, "messages": [{"role": "user", "content": "word " * 700}]}
        unread = await at_once(locked.client.post("/v1/chat/completions", json=huge, headers=bearer(KEYS[4])))
        assert assert_error(unread, 429)["code"] == "queue_full", "refused before its prompt is tokenized"
    assert held[0].result().status_code == 200
    after = await locked.client.post("/v1/chat/completions", json=CHAT, headers=bearer(KEYS[4]))
    assert after.status_code == 200, "capacity came back when the stream ended"
    assert len(locked.runner.prompts) == 2, "the held request and the one after it, none of the refused"
    assert "word word" not in locked.fed_text()


async def test_ceilings_on_body_size_prompt_tokens_and_max_tokens(locked: InProcess) -> None:
    key = bearer(KEYS[0])
    big = {"messages": [{"role": "user", "content": "x" * 5000}]}
    assert_error(await locked.client.post("/v1/chat/completions", json=big, headers=key), 413)
    long_prompt = {"messages": [{"role": "user", "content": "word " * 300}], "max_tokens": 2}
    err = assert_error(
        await locked.client.post("/v1/chat/completions", json=long_prompt, headers=key),
        400,
        param="messages",
    )
    assert "200" in err["message"] and err["code"] == "prompt_too_long"
    err = assert_error(
        await locked.client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 17}, headers=key),
        400,
        param="max_tokens",
    )
    assert "16" in err["message"]
    assert locked.runner.prompts == [], "a request over a ceiling reached the engine"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/stream", "/"])
async def test_a_chunked_body_over_the_limit_is_413_too(locked: InProcess, path: str) -> None:
    """A body without Content-Length is counted as it arrives and refused like a declared one.

    Regression: FastAPI turned the limit's error, raised while it read the body, into its own 400.
    """
    payload = json.dumps({"messages": [{"role": "user", "content": "x" * 5000}], "prompt": "x" * 5000}).encode()

    async def in_chunks() -> AsyncIterator[bytes]:  # no Content-Length: httpx sends it chunked
        for start in range(0, len(payload), 1000):
            yield payload[start : start + 1000]

    r = await locked.client.post(path, content=in_chunks(), headers={**bearer(KEYS[0]), **JSON})
    assert r.request.headers.get("transfer-encoding") == "chunked" and "content-length" not in r.request.headers
    assert_error(r, 413)
    assert locked.runner.prompts == [], "a body over the limit reached the engine"


async def test_metrics_can_be_locked_behind_the_key(locked: InProcess) -> None:
    assert_error(await locked.client.get("/metrics"), 401)
    assert (await locked.client.get("/metrics", headers=bearer(KEYS[0]))).status_code == 200


def test_key_comparison() -> None:
    keys = frozenset(KEYS)
    assert matches("beta-key", keys)
    assert not matches("beta-ke", keys) and not matches("beta-keyy", keys) and not matches("", keys)


async def test_a_stream_belongs_to_the_key_that_started_it(start_inprocess: StartInProcess) -> None:
    """Regression: with several keys, any key could replay or cancel another key's stream by its id."""
    async with start_inprocess(Settings(api_key=["k1", "k2"])) as server:
        client = server.client
        started = await client.post(
            "/v1/chat/completions", json={**CHAT, "stream": True}, headers={"Authorization": "Bearer k1"}
        )
        stream_id = started.headers["x-stream-id"]
        assert len(stream_id) == 32 and int(stream_id, 16) >= 0  # 128 random bits
        theirs = {"Authorization": "Bearer k2"}
        assert_error(await client.get(f"/v1/streams/{stream_id}", headers=theirs), 404)
        assert_error(await client.delete(f"/v1/streams/{stream_id}", headers=theirs), 404)
        seed_resume = await client.get("/stream?prompt=x&api_key=k2", headers={"Last-Event-ID": f"{stream_id}:0"})
        assert seed_resume.status_code == 204  # EventSource: "gone", stop reconnecting
        mine = await client.get(f"/v1/streams/{stream_id}", headers={"Authorization": "Bearer k1"})
        assert mine.status_code == 200 and mine.text.rstrip().endswith("data: [DONE]")


async def test_wrong_keys_from_one_address_are_throttled(start_inprocess: StartInProcess) -> None:
    async with start_inprocess(Settings(api_key=["right"], auth_failures_per_minute=3)) as server:
        wrong = {"Authorization": "Bearer guess"}
        for _ in range(3):
            assert_error(await server.client.get("/v1/models", headers=wrong), 401)
        throttled = await server.client.get("/v1/models", headers=wrong)
        assert assert_error(throttled, 429)["code"] == "too_many_auth_failures" and "Retry-After" in throttled.headers
        right = await server.client.get("/v1/models", headers={"Authorization": "Bearer right"})
        assert right.status_code == 429  # the address is held back whatever it sends, until the window frees
