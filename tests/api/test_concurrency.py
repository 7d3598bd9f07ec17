"""Streams share the server: health stays quick, a second request streams at once, a client that
leaves takes its generation with it and the server keeps serving."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.support import RESUME_GRACE_S, wait_for

LONG = {"prompt": "Write a very long essay about the sea.", "max_tokens": 400, "temperature": 0, "ignore_eos": True}
SHORT = {"prompt": "Hello", "max_tokens": 8, "temperature": 0}


def health(base_url: str) -> dict:
    return httpx.get(f"{base_url}/health", timeout=10.0).json()


def idle(base_url: str, timeout: float) -> bool:
    return wait_for(lambda: health(base_url)["running"] == 0, timeout)


async def first_data(lines) -> str:
    async for line in lines:
        if line.startswith("data:"):
            return line
    raise AssertionError("stream ended without data")


async def test_health_and_a_second_stream_while_one_streams(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(60.0, connect=5.0)) as client:
        body = {**LONG, "stream": True, "resumable": False}
        async with client.stream("POST", "/v1/completions", json=body) as first:
            first_lines = first.aiter_lines()
            await first_data(first_lines)

            started = time.monotonic()
            r = await client.get("/health")
            assert time.monotonic() - started < 1.0
            assert r.status_code == 200 and r.json()["running"] >= 1

            async with client.stream("POST", "/v1/completions", json={**SHORT, "stream": True}) as second:
                assert second.status_code == 200
                chunks = [line async for line in second.aiter_lines() if line.startswith("data:")]
            assert chunks[-1] == "data: [DONE]" and len(chunks) >= 3
            # the first stream was still going all along: it streams on after the second finished
            assert (await asyncio.wait_for(first_data(first_lines), 30)) != "data: [DONE]"


@pytest.mark.parametrize("resumable", [False, True])
def test_client_leaving_after_first_chunk_aborts_its_generation(base_url: str, resumable: bool) -> None:
    assert idle(base_url, 10), "an earlier request is still running"
    before = health(base_url)
    with (
        httpx.Client(base_url=base_url, timeout=60.0) as client,
        client.stream("POST", "/v1/completions", json={**LONG, "stream": True, "resumable": resumable}) as r,
    ):
        lines = r.iter_lines()  # held: dropping a half-read iterator closes the connection
        assert next(line for line in lines if line.startswith("data:"))
        assert health(base_url)["running"] == 1
    # a resumable stream waits `resume_grace` seconds for its client to come back, then is dropped
    assert idle(base_url, 5 + (RESUME_GRACE_S if resumable else 0)), health(base_url)
    after = health(base_url)
    assert after["aborted"] > before["aborted"]
    assert after["finished"] == before["finished"]  # ended by the abort, not by running out of tokens
    r = httpx.post(f"{base_url}/v1/completions", json=SHORT, timeout=60.0)
    assert r.status_code == 200 and r.json()["choices"][0]["text"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", LONG),
        ("/v1/chat/completions", {**LONG, "messages": [{"role": "user", "content": LONG["prompt"]}]}),
        ("/", {"prompt": LONG["prompt"], "max_length": 2048, "temperature": 0.95}),
    ],
)
def test_client_leaving_a_non_streamed_request_aborts_it(base_url: str, path: str, body: dict) -> None:
    assert idle(base_url, 10), "an earlier request is still running"
    before = health(base_url)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{base_url}{path}", json=body, timeout=httpx.Timeout(1.5, connect=5.0))
    assert idle(base_url, 5), health(base_url)
    assert health(base_url)["aborted"] > before["aborted"]
