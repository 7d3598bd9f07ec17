"""What a disconnect means: grace for resumable streams, at once for opt-outs and cancels."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import running_server
from tests.support import LONG_ANSWER, parse_sse, wait_for

GRACE_S = 3.0
LONG = {
    "messages": [{"role": "user", "content": "Tell me a long story."}],
    "max_tokens": LONG_ANSWER,
    "temperature": 0,
    "ignore_eos": True,
    "stream": True,
}


@pytest.fixture(scope="module")
def short_grace_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    flags = ["--resume-grace", str(GRACE_S), "--log-level", "warning"]
    with running_server(tmp_path_factory.mktemp("grace"), *flags) as server:
        yield server.url


def health(url: str) -> dict:
    return httpx.get(f"{url}/health", timeout=10).json()


def start_and_drop(client: httpx.Client, url: str, body: dict) -> str:
    """Open a stream, read its first event, and leave without a word."""
    with client.stream("POST", f"{url}/v1/chat/completions", json=body) as resp:
        stream_id = resp.headers["x-stream-id"]
        for line in resp.iter_lines():
            if line.startswith("data:"):
                break
    return stream_id


def test_an_abandoned_stream_runs_through_the_grace_period_then_is_aborted(short_grace_url: str) -> None:
    before = health(short_grace_url)
    with httpx.Client(timeout=30) as client:
        stream_id = start_and_drop(client, short_grace_url, LONG)
    dropped_at = time.monotonic()
    assert health(short_grace_url)["running"] == 1, "it must keep generating while it may be resumed"
    assert wait_for(lambda: health(short_grace_url)["running"] == 0, timeout=GRACE_S + 20)
    waited = time.monotonic() - dropped_at
    after = health(short_grace_url)
    assert waited >= GRACE_S - 0.5
    assert after["aborted"] == before["aborted"] + 1
    assert after["streams"]["abandoned"] == before["streams"]["abandoned"] + 1
    with httpx.Client(timeout=30) as client:  # regression: the replay ended in [DONE] as if the answer were whole
        replay = parse_sse(client.get(f"{short_grace_url}/v1/streams/{stream_id}").text).events
    assert replay[-1].data == "[DONE]"
    assert replay[-2].event == "error" and json.loads(replay[-2].data)["error"]["code"] == "abandoned"
    assert not any('"finish_reason":"' in e.data for e in replay)


def test_a_resume_within_the_grace_period_keeps_the_stream(short_grace_url: str) -> None:
    body = {**LONG, "max_tokens": 40}
    with httpx.Client(timeout=60) as client:
        stream_id = start_and_drop(client, short_grace_url, body)
        time.sleep(GRACE_S / 3)
        resumed = client.get(f"{short_grace_url}/v1/streams/{stream_id}")
    assert resumed.status_code == 200
    assert resumed.text.rstrip().endswith("data: [DONE]")
    assert '"finish_reason":"length"' in resumed.text, "the answer ran to its end, not aborted"


def test_cancel_stops_generation_at_once(short_grace_url: str) -> None:
    before = health(short_grace_url)
    with httpx.Client(timeout=30) as client:
        stream_id = start_and_drop(client, short_grace_url, LONG)
        started = time.monotonic()
        r = client.delete(f"{short_grace_url}/v1/streams/{stream_id}")
        assert r.status_code == 200 and r.json()["cancelled"] is True
        assert wait_for(lambda: health(short_grace_url)["running"] == 0, timeout=5)
        assert time.monotonic() - started < GRACE_S, "cancel must not wait for the grace period"
        after = health(short_grace_url)
        assert after["streams"]["cancelled"] == before["streams"]["cancelled"] + 1
        assert after["aborted"] == before["aborted"] + 1
        replay = parse_sse(client.get(f"{short_grace_url}/v1/streams/{stream_id}").text).events
        assert replay[-1].data == "[DONE]", "a cancelled stream still ends with [DONE]"
        # regression: readers got text then [DONE], as if the answer were whole
        assert replay[-2].event == "error" and json.loads(replay[-2].data)["error"]["code"] == "cancelled"


def test_a_stream_that_opted_out_is_aborted_when_its_reader_leaves(short_grace_url: str) -> None:
    before = health(short_grace_url)
    with httpx.Client(timeout=30) as client:
        start_and_drop(client, short_grace_url, {**LONG, "resumable": False})
    assert wait_for(lambda: health(short_grace_url)["running"] == 0, timeout=GRACE_S / 2)
    assert health(short_grace_url)["aborted"] == before["aborted"] + 1
