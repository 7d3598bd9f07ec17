"""What a key protects, against the real server: streams of another key, and guessed keys."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import running_server
from tests.support import assert_error

CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0, "stream": True}


@pytest.fixture(scope="module")
def keyed_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    flags = ["--api-key", "k1,k2", "--auth-failures-per-minute", "5", "--log-level", "warning"]
    with running_server(tmp_path_factory.mktemp("keyed"), *flags) as server:
        yield server.url


def test_another_keys_stream_does_not_exist_for_you(keyed_url: str) -> None:
    """Regression: with `--api-key k1,k2`, k2 could replay and DELETE a stream k1 started."""
    with httpx.Client(base_url=keyed_url, timeout=60) as client:
        started = client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": "Bearer k1"})
        stream_id = started.headers["x-stream-id"]
        assert started.status_code == 200 and len(stream_id) == 32
        k2 = {"Authorization": "Bearer k2"}
        assert assert_error(client.get(f"/v1/streams/{stream_id}", headers=k2), 404)["code"] == "stream_not_found"
        assert_error(client.delete(f"/v1/streams/{stream_id}", headers=k2), 404)
        assert client.get(f"/v1/streams/{stream_id}?api_key=k2").status_code == 404  # EventSource's way
        own = client.get(f"/v1/streams/{stream_id}?api_key=k1")
        assert own.status_code == 200 and own.text.rstrip().endswith("data: [DONE]")


def test_a_burst_of_wrong_keys_is_throttled(keyed_url: str) -> None:
    """Regression: wrong keys could be tried at line rate."""
    with httpx.Client(base_url=keyed_url, timeout=30) as client:
        guesses = [client.get("/v1/models", headers={"Authorization": f"Bearer guess-{i}"}) for i in range(5)]
        assert [r.status_code for r in guesses] == [401] * 5
        throttled = client.get("/v1/models", headers={"Authorization": "Bearer guess"})
        assert assert_error(throttled, 429)["code"] == "too_many_auth_failures"
        assert int(throttled.headers["Retry-After"]) >= 1
