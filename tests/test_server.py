"""Graceful shutdown: SIGTERM drains, closes what is left with a reconnect error, exits 0."""

from __future__ import annotations

import signal
import threading
import time

import httpx

from tests.conftest import running_server
from tests.support import LONG_ANSWER, parse_sse

LONG = {
    "messages": [{"role": "user", "content": "Tell me a long story."}],
    "temperature": 0,
    "ignore_eos": True,
    "stream": True,
}


def stream_in_background(url: str, body: dict, out: dict, started: threading.Event) -> threading.Thread:
    def run() -> None:
        with (
            httpx.Client(timeout=120) as client,
            client.stream("POST", f"{url}/v1/chat/completions", json=body) as resp,
        ):
            text = ""
            for chunk in resp.iter_text():
                text += chunk
                if '"content":"' in text.split("\n\n", 2)[-1]:  # a token arrived, not only the role
                    started.set()
            out["body"] = text

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_sigterm_drains_then_closes_open_streams_with_a_reconnect_error_and_exits_0(tmp_path) -> None:
    flags = ["--shutdown-grace", "10", "--log-level", "warning", "--engine", "transformers"]
    with running_server(tmp_path, *flags) as server:
        proc, url = server.proc, server.url
        short_out, long_out = {}, {}
        short_started, long_started = threading.Event(), threading.Event()
        short = stream_in_background(url, {**LONG, "max_tokens": 3}, short_out, short_started)
        long = stream_in_background(url, {**LONG, "max_tokens": LONG_ANSWER}, long_out, long_started)
        assert short_started.wait(120) and long_started.wait(120)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        refused = httpx.post(f"{url}/v1/chat/completions", json={**LONG, "stream": False}, timeout=10)
        assert refused.status_code == 503 and "Retry-After" in refused.headers
        assert refused.json()["error"]["code"] == "server_shutdown"
        health = httpx.get(f"{url}/health", timeout=10)  # regression: it answered 200 "ok" while draining
        assert health.status_code == 503 and health.json() == {"status": "draining"} and "Retry-After" in health.headers
        assert proc.wait(timeout=60) == 0
        short.join(10)
        long.join(10)
    finished = parse_sse(short_out["body"]).events
    assert finished[-1].data == "[DONE]" and '"finish_reason":"length"' in finished[-2].data
    cut = parse_sse(long_out["body"]).events
    assert cut[-1].data == "[DONE]"
    assert cut[-2].event == "error" and '"server_shutdown"' in cut[-2].data


def test_each_request_is_logged_once_with_its_id(tmp_path) -> None:
    """uvicorn's own access line would repeat streamchat's without the request id."""
    with running_server(tmp_path, "--max-num-seqs", "2", "--log-level", "info") as server:
        resp = httpx.get(f"{server.url}/v1/models", headers={"X-Request-Id": "log-once-1"}, timeout=30)
        assert resp.status_code == 200
        time.sleep(0.5)  # the line is written when the response has ended
        log = server.log_path.read_text()
    assert len([line for line in log.splitlines() if "log-once-1" in line]) == 1
    assert '"GET /v1/models HTTP/1.1"' not in log
