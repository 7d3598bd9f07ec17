"""API keys on every model route, per-key limits, body and token ceilings."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from streamchat.api.auth import matches
from tests.conftest import running_server
from tests.support import assert_error

KEYS = ("alpha-key", "beta-key", "gamma-key", "delta-key", "epsilon-key")
RPM = 4
CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "temperature": 0}


@pytest.fixture(scope="module")
def locked_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    key_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    key_file.write_text(f"# operators' keys\n{KEYS[2]}\n\n", encoding="utf-8")
    flags = ["--engine", "transformers", "--api-key", ",".join(KEYS[:2] + KEYS[3:]), "--api-key-file", str(key_file),
             "--rate-limit-rpm", str(RPM), "--max-concurrent-per-key", "1", "--max-body-bytes", "4096",
             "--max-prompt-tokens", "200", "--max-tokens-limit", "16", "--max-num-seqs", "1", "--max-queue", "0",
             "--public-health", "true", "--public-metrics", "false", "--log-level", "warning"]  # fmt: skip
    with running_server(key_file.parent, *flags) as server:
        yield server.url


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@contextmanager
def holding_a_stream(url: str, key: str) -> Iterator[None]:
    """Keep one streamed request of `key` open (and counted by the server) for the block's duration."""
    body = {**CHAT, "max_tokens": 16, "ignore_eos": True, "stream": True}
    first_open = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, headers=bearer(key), timeout=60) as r:
            assert r.status_code == 200
            first_open.set()
            release.wait(30)
            r.read()

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert first_open.wait(60)
        yield
    finally:
        release.set()
        t.join(60)


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
def test_every_model_route_needs_a_valid_key(locked_url: str, method: str, path: str, body: dict | None) -> None:
    missing = httpx.request(method, locked_url + path, json=body, timeout=30)
    assert_error(missing, 401)
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"]["code"] == "missing_api_key"
    wrong = httpx.request(method, locked_url + path, json=body, headers=bearer("alpha-kez"), timeout=30)
    assert assert_error(wrong, 401)["code"] == "invalid_api_key"


def test_keys_from_the_flag_and_the_file_are_accepted_and_health_stays_public(locked_url: str) -> None:
    for key in (KEYS[0], KEYS[2]):
        r = httpx.get(f"{locked_url}/v1/models", headers=bearer(key), timeout=30)
        assert r.status_code == 200, r.text
    assert httpx.get(f"{locked_url}/health", timeout=10).status_code == 200
    assert httpx.get(f"{locked_url}/", timeout=10).status_code == 200, "the page is public; it asks for the key"


def test_event_source_can_pass_the_key_in_the_query(locked_url: str) -> None:
    r = httpx.get(f"{locked_url}/stream?prompt=Hi&max_length=40&api_key={KEYS[0]}", timeout=60)
    assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")


def test_requests_per_minute_are_limited_per_key(locked_url: str) -> None:
    key = KEYS[1]
    codes = [httpx.get(f"{locked_url}/v1/models", headers=bearer(key), timeout=30) for _ in range(RPM + 1)]
    assert [r.status_code for r in codes[:RPM]] == [200] * RPM
    refused = codes[RPM]
    assert assert_error(refused, 429)["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    other = httpx.get(f"{locked_url}/v1/models", headers=bearer(KEYS[2]), timeout=30)
    assert other.status_code == 200, "another key has its own budget"


def test_requests_in_flight_are_limited_per_key(locked_url: str) -> None:
    key = KEYS[2]
    with holding_a_stream(locked_url, key):
        second = httpx.post(f"{locked_url}/v1/chat/completions", json=CHAT, headers=bearer(key), timeout=30)
        assert assert_error(second, 429)["code"] == "concurrency_limit_exceeded"
        assert second.headers["retry-after"] == "1"


def test_a_full_server_refuses_at_once_with_429_and_retry_after(locked_url: str) -> None:
    """--max-num-seqs 1 --max-queue 0: while one request runs, the next is refused, not queued."""
    with holding_a_stream(locked_url, KEYS[3]):
        refused = httpx.post(f"{locked_url}/v1/chat/completions", json=CHAT, headers=bearer(KEYS[4]), timeout=30)
        assert assert_error(refused, 429)["code"] == "queue_full"
        assert refused.headers["retry-after"] == "1"
        assert refused.elapsed.total_seconds() < 2.0, "a refusal must not wait for capacity"
        huge = {**CHAT, "messages": [{"role": "user", "content": "word " * 700}]}
        unread = httpx.post(f"{locked_url}/v1/chat/completions", json=huge, headers=bearer(KEYS[4]), timeout=30)
        assert assert_error(unread, 429)["code"] == "queue_full", "refused before its prompt is tokenized"
    after = httpx.post(f"{locked_url}/v1/chat/completions", json=CHAT, headers=bearer(KEYS[4]), timeout=60)
    assert after.status_code == 200, "capacity came back when the stream ended"


def test_ceilings_on_body_size_prompt_tokens_and_max_tokens(locked_url: str) -> None:
    key = bearer(KEYS[0])
    big = {"messages": [{"role": "user", "content": "x" * 5000}]}
    assert_error(httpx.post(f"{locked_url}/v1/chat/completions", json=big, headers=key, timeout=30), 413)
    long_prompt = {"messages": [{"role": "user", "content": "word " * 300}], "max_tokens": 2}
    err = assert_error(
        httpx.post(f"{locked_url}/v1/chat/completions", json=long_prompt, headers=key, timeout=30),
        400,
        param="messages",
    )
    assert "200" in err["message"] and err["code"] == "prompt_too_long"
    err = assert_error(
        httpx.post(f"{locked_url}/v1/chat/completions", json={**CHAT, "max_tokens": 17}, headers=key, timeout=30),
        400,
        param="max_tokens",
    )
    assert "16" in err["message"]


def test_metrics_can_be_locked_behind_the_key(locked_url: str) -> None:
    assert_error(httpx.get(f"{locked_url}/metrics", timeout=10), 401)
    assert httpx.get(f"{locked_url}/metrics", headers=bearer(KEYS[0]), timeout=10).status_code == 200


def test_key_comparison() -> None:
    keys = frozenset(KEYS)
    assert matches("beta-key", keys)
    assert not matches("beta-ke", keys) and not matches("beta-keyy", keys) and not matches("", keys)
