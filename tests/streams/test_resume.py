"""Dropped connections resume with standard SSE `Last-Event-ID` and lose nothing."""

from __future__ import annotations

import asyncio
import json
import random

import httpx
import pytest

from tests.support import parse_sse

PROMPTS = [
    "Name three rivers.",
    "What is a prime number?",
    "Describe the moon in one sentence.",
    "Give me a tip for cooking rice.",
    "What does a bee do?",
    "Say something kind.",
    "What is the color of grass?",
    "Count from one to ten.",
]
MAX_TOKENS = 24


def chat_body(prompt: str, stream: bool) -> dict:
    return {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "stream": stream,
    }


def content(events: list) -> str:
    out = []
    for ev in events:
        if ev.data == "[DONE]":
            continue
        for choice in json.loads(ev.data)["choices"]:
            out.append(choice["delta"].get("content") or "")
    return "".join(out)


async def read_until_cut(client: httpx.AsyncClient, method: str, url: str, cut_at: int, **kw) -> tuple[str, bytes]:
    """Read a stream's raw bytes and drop the connection after `cut_at` bytes (mid-event, maybe)."""
    got = b""
    async with client.stream(method, url, **kw) as resp:
        assert resp.status_code == 200, await resp.aread()
        stream_id = resp.headers["x-stream-id"]
        async for chunk in resp.aiter_raw():
            got += chunk
            if len(got) >= cut_at:
                break
    return stream_id, got[:cut_at]


async def dropped_and_resumed(client: httpx.AsyncClient, base_url: str, prompt: str, rng: random.Random) -> list:
    stream_id, head = await read_until_cut(
        client, "POST", f"{base_url}/v1/chat/completions", rng.randint(1, 2500), json=chat_body(prompt, True)
    )
    events = parse_sse(head.decode("utf-8", errors="ignore")).events
    # the WHATWG parser only dispatches complete events, so a half-received one is simply not counted
    last_id = events[-1].id if events else f"{stream_id}:-1"
    headers = {"Last-Event-ID": last_id} if events else {}
    resp = await client.get(f"{base_url}/v1/streams/{stream_id}", headers=headers)
    if resp.status_code == 204:  # everything had arrived before the cut
        return events
    assert resp.status_code == 200, resp.text
    return events + parse_sse(resp.text).events


def check_whole(events: list, expected: str) -> None:
    ids = [int(ev.id.rpartition(":")[2]) for ev in events]
    assert ids == list(range(len(ids))), f"gap or duplicate in event ids: {ids}"
    assert [ev.data for ev in events].count("[DONE]") == 1 and events[-1].data == "[DONE]"
    assert content(events) == expected


async def test_fifty_streams_dropped_at_random_points_reassemble_exactly(base_url: str) -> None:
    rng = random.Random(20261125)
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=5.0)) as client:
        expected = {}
        for p in PROMPTS:
            r = await client.post(f"{base_url}/v1/chat/completions", json=chat_body(p, False))
            expected[p] = r.json()["choices"][0]["message"]["content"]
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(50)]
        for start in range(0, 50, 10):  # ten at a time: they also share decode steps
            batch = prompts[start : start + 10]
            results = await asyncio.gather(*(dropped_and_resumed(client, base_url, p, rng) for p in batch))
            for p, events in zip(batch, results, strict=True):
                check_whole(events, expected[p])


async def test_event_source_reconnect_on_get_stream_resumes_the_same_answer(base_url: str) -> None:
    url = f"{base_url}/stream?prompt=Name%20three%20colours.&max_length=90&temperature=0"
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=5.0)) as client:
        whole = parse_sse((await client.get(url)).text).events
        stream_id, head = await read_until_cut(client, "GET", url, 300)
        first = parse_sse(head.decode("utf-8", errors="ignore")).events
        assert first, "the cut came before the first event"
        rest = await client.get(url, headers={"Last-Event-ID": first[-1].id})  # what EventSource sends
        assert rest.status_code == 200 and rest.headers["x-stream-id"] == stream_id
        resumed = first + parse_sse(rest.text).events
        texts = lambda evs: "".join(json.loads(e.data)["text"] for e in evs if e.data != "[DONE]")  # noqa: E731
        assert texts(resumed) == texts(whole)
        assert [e.data for e in resumed].count("[DONE]") == 1
        done = await client.get(url, headers={"Last-Event-ID": resumed[-1].id})
        assert done.status_code == 204, "a finished stream must tell EventSource to stop reconnecting"


async def test_two_readers_follow_one_stream(base_url: str) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=5.0)) as client:
        body = chat_body(PROMPTS[0], True)
        async with client.stream("POST", f"{base_url}/v1/chat/completions", json=body) as first:
            stream_id = first.headers["x-stream-id"]
            second_task = asyncio.create_task(client.get(f"{base_url}/v1/streams/{stream_id}"))
            first_text = (await first.aread()).decode()
        second = await second_task
        assert parse_sse(second.text).events == parse_sse(first_text).events


@pytest.mark.parametrize("bad", ["nonsense", "otherstream:3"])
async def test_a_bad_last_event_id_is_a_400(base_url: str, bad: str) -> None:
    async with httpx.AsyncClient(timeout=30.0) as client:
        r = await client.post(f"{base_url}/v1/chat/completions", json={**chat_body(PROMPTS[1], True), "max_tokens": 2})
        stream_id = r.headers["x-stream-id"]
        resp = await client.get(f"{base_url}/v1/streams/{stream_id}", headers={"Last-Event-ID": bad})
        assert resp.status_code == 400
        assert resp.json()["error"]["param"] == "Last-Event-ID"


async def test_an_unknown_stream_is_a_404(base_url: str) -> None:
    async with httpx.AsyncClient(timeout=30.0) as client:
        resp = await client.get(f"{base_url}/v1/streams/does-not-exist")
        assert resp.status_code == 404
        assert resp.json()["error"]["code"] == "stream_not_found"
        assert (await client.delete(f"{base_url}/v1/streams/does-not-exist")).status_code == 404
