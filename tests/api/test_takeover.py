"""Streams that outlive the process producing them, against a real redis-server and real servers.

One server starts three answers and is killed with SIGKILL mid-answer; two fresh servers on the
same Redis then finish them from the clients' `Last-Event-ID`: a greedy chat answer and a seeded
sampled completion each reassemble into what an uninterrupted run answers, with one `[DONE]`; two
processes racing for the third answer leave exactly one continuing it while the other's reader
follows the log and gets the same events.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import RunningServer, running_server
from tests.support import parse_sse

ANSWER_TOKENS = 96
GREEDY_CHAT = {
    "messages": [{"role": "user", "content": "Tell me about the sea."}],
    "max_tokens": ANSWER_TOKENS, "temperature": 0, "ignore_eos": True, "stream": True,
    "stream_options": {"include_usage": True},
}  # fmt: skip
SEEDED_COMPLETION = {
    "prompt": "Once upon a time, in a village by the mountains,",
    "max_tokens": ANSWER_TOKENS, "temperature": 0.9, "top_p": 0.95, "seed": 7, "ignore_eos": True, "stream": True,
}  # fmt: skip
RACED_CHAT = {**GREEDY_CHAT, "messages": [{"role": "user", "content": "Describe a forest at night."}]}
READ_BEFORE_KILL = 4  # events each client has seen when the server dies
FLAGS = ("--stream-lease", "1", "--max-num-seqs", "4", "--log-level", "info")


@dataclass
class Cut:
    """A stream as its client saw it when the server producing it died."""

    path: str  # the route that started it
    body: dict
    stream_id: str
    seen: list[dict]  # the events read, as (id, data)


@dataclass
class Survivors:
    cuts: dict[str, Cut]
    servers: list[RunningServer]


def folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _open(stack: ExitStack, client: httpx.Client, path: str, body: dict) -> tuple[str, Iterator[str]]:
    response = stack.enter_context(client.stream("POST", path, json=body))
    assert response.status_code == 200
    return response.headers["x-stream-id"], response.iter_lines()


def _read_events(lines: Iterator[str], count: int) -> list[dict]:
    events, current = [], {}
    for line in lines:
        if line.startswith("id:"):
            current["id"] = line.removeprefix("id:").strip()
        elif line.startswith("data:"):
            current["data"] = line.removeprefix("data:").strip()
        elif not line and "data" in current:
            events.append(current)
            current = {}
            if len(events) == count:
                return events
    raise AssertionError(f"the stream ended after {len(events)} events")


@pytest.fixture(scope="module")
def survivors(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Survivors]:
    from tests.redis_server import running_redis

    base = tmp_path_factory.mktemp("takeover")
    with running_redis(base / "redis") as store, ExitStack() as servers:
        flags = ("--stream-store", store.url, *FLAGS)
        cuts: dict[str, Cut] = {}
        with running_server(folder(base / "dies"), *flags) as doomed, ExitStack() as streams:
            client = streams.enter_context(httpx.Client(base_url=doomed.url, timeout=60))
            opened = {
                "greedy": ("/v1/chat/completions", GREEDY_CHAT),
                "seeded": ("/v1/completions", SEEDED_COMPLETION),
                "raced": ("/v1/chat/completions", RACED_CHAT),
            }
            lines = {}
            for name, (path, body) in opened.items():
                stream_id, lines[name] = _open(streams, client, path, body)
                cuts[name] = Cut(path, body, stream_id, [])
            for name, cut in cuts.items():
                cut.seen = _read_events(lines[name], READ_BEFORE_KILL)
            doomed.proc.send_signal(signal.SIGKILL)
            doomed.proc.wait(timeout=10)
        meta = redis.Redis.from_url(store.url)
        for cut in cuts.values():  # killed mid-answer: nothing closed the streams
            assert meta.hget(f"sc:m:{cut.stream_id}", "state") == b"open"
        meta.close()
        alive = [servers.enter_context(running_server(folder(base / f"s{i}"), *flags)) for i in range(2)]
        yield Survivors(cuts, alive)


def _resume(url: str, cut: Cut) -> list[dict]:
    last = cut.seen[-1]["id"]
    response = httpx.get(f"{url}/v1/streams/{cut.stream_id}", headers={"Last-Event-ID": last}, timeout=120)
    assert response.status_code == 200, response.text
    return [{"id": e.id, "data": e.data} for e in parse_sse(response.text).events]


def _uninterrupted(url: str, cut: Cut) -> list[str]:
    response = httpx.post(f"{url}{cut.path}", json=cut.body, timeout=120)
    assert response.status_code == 200
    return [e.data for e in parse_sse(response.text).events]


def _text(data: list[str]) -> str:
    parts = []
    for item in data:
        if item == "[DONE]":
            continue
        for choice in json.loads(item)["choices"]:
            parts.append(choice.get("text") or choice.get("delta", {}).get("content") or "")
    return "".join(parts)


def _finish_and_usage(data: list[str]) -> tuple[list[str | None], list[dict]]:
    chunks = [json.loads(item) for item in data if item != "[DONE]"]
    finishes = [c["finish_reason"] for chunk in chunks for c in chunk["choices"] if c["finish_reason"]]
    return finishes, [chunk["usage"] for chunk in chunks if chunk.get("usage")]


def _check_continued(cut: Cut, rest: list[dict], reference: list[str]) -> None:
    """The events before the kill and after the resume make one answer: numbered on, the same
    chunk id and `created`, the uninterrupted text, one finish, one `[DONE]`."""
    whole = cut.seen + rest
    numbers = [int(e["id"].rpartition(":")[2]) for e in whole]
    assert numbers == list(range(len(whole))), "the numbering goes on where it stopped"
    data = [e["data"] for e in whole]
    assert data.count("[DONE]") == 1 and data[-1] == "[DONE]"
    envelopes = {(c["id"], c["created"]) for c in (json.loads(d) for d in data if d != "[DONE]")}
    assert len(envelopes) == 1, "every chunk carries the first process's id and created"
    assert _text(data) == _text(reference)
    assert len(_text(data)) > 100
    assert _finish_and_usage(data) == _finish_and_usage(reference)


def _taken_over(url: str) -> int:
    return httpx.get(f"{url}/health", timeout=10).json()["streams"]["taken_over"]


def test_a_greedy_chat_answer_is_finished_by_another_process(survivors: Survivors) -> None:
    url = survivors.servers[0].url
    cut = survivors.cuts["greedy"]
    before = _taken_over(url)
    rest = _resume(url, cut)
    assert _taken_over(url) == before + 1
    _check_continued(cut, rest, _uninterrupted(url, cut))


def test_a_seeded_completion_continues_as_the_uninterrupted_sample(survivors: Survivors) -> None:
    url = survivors.servers[1].url
    cut = survivors.cuts["seeded"]
    rest = _resume(url, cut)
    _check_continued(cut, rest, _uninterrupted(url, cut))


def test_two_processes_racing_for_a_stream_one_continues_the_other_follows(survivors: Survivors) -> None:
    cut = survivors.cuts["raced"]
    urls = [server.url for server in survivors.servers]
    before = [_taken_over(url) for url in urls]
    results: dict[str, list[dict]] = {}
    start = threading.Barrier(len(urls))

    def resume(url: str) -> None:
        start.wait()
        results[url] = _resume(url, cut)

    threads = [threading.Thread(target=resume, args=(url,)) for url in urls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    grew = [_taken_over(url) - b for url, b in zip(urls, before, strict=True)]
    assert sorted(grew) == [0, 1], "exactly one process continues the stream"
    assert results[urls[0]] == results[urls[1]], "the other's reader follows the log and sees the same events"
    _check_continued(cut, results[urls[0]], _uninterrupted(urls[0], cut))
