"""The server with `--stream-store redis://…` against a real redis-server: resumption across a
restart of the server, and what happens when Redis goes away and comes back."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import running_server
from tests.redis_server import running_redis
from tests.support import assert_error, parse_sse, wait_for

CHAT = {"messages": [{"role": "user", "content": "Tell me about the sea."}], "max_tokens": 24, "temperature": 0,
        "stream": True}  # fmt: skip
FLAGS = ("--max-num-seqs", "4", "--log-level", "warning")


def folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def data(body: str) -> list[str]:
    return [e.data for e in parse_sse(body).events]


def test_a_stream_outlives_the_server_that_produced_it(tmp_path: Path) -> None:
    with running_redis(tmp_path / "redis") as redis:
        with running_server(folder(tmp_path / "one"), "--stream-store", redis.url, *FLAGS) as server:
            first = httpx.post(f"{server.url}/v1/chat/completions", json=CHAT, timeout=120)
            assert first.status_code == 200
            stream_id = first.headers["x-stream-id"]
            events = data(first.text)
        with running_server(folder(tmp_path / "two"), "--stream-store", redis.url, *FLAGS) as again:
            rest = httpx.get(f"{again.url}/v1/streams/{stream_id}", headers={"Last-Event-ID": f"{stream_id}:2"})
            assert rest.status_code == 200
            assert data(rest.text) == events[3:]
            whole = httpx.get(f"{again.url}/v1/streams/{stream_id}")
            assert data(whole.text) == events and events[-1] == "[DONE]"


def test_redis_going_away_and_coming_back(tmp_path: Path) -> None:
    with running_redis(tmp_path / "redis") as redis, running_server(
        folder(tmp_path / "srv"), "--stream-store", redis.url, *FLAGS
    ) as server, httpx.Client(base_url=server.url, timeout=60) as client:  # fmt: skip
        long = {**CHAT, "max_tokens": 300, "ignore_eos": True}
        with client.stream("POST", "/v1/chat/completions", json=long) as live:
            lines = live.iter_lines()
            assert next(lines).startswith("id:")
            redis.stop()
            rest = "\n".join(lines)  # the stream must end, not hang
        assert "stream_store_unavailable" in rest and rest.rstrip().endswith("data: [DONE]")
        assert assert_error(client.post("/v1/chat/completions", json=CHAT), 503)["code"] == "stream_store_unavailable"
        plain = client.post("/v1/chat/completions", json={**CHAT, "stream": False})
        assert plain.status_code == 200, "answers that need no stream log are still served"
        redis.start()  # back on the same address: service recovers by itself
        assert wait_for(lambda: client.post("/v1/chat/completions", json=CHAT).status_code == 200, timeout=30)
