"""Keep-alive pings never break a client.

The server under test pings every second. The official `openai` SDK mis-parses a stream with `id:`
lines when a comment is followed by a blank line, so a stream long enough to carry several pings
must still parse completely. One request shows both: the SDK's own HTTP client tees the raw bytes.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator

import httpx
import openai

from tests.support import PING_INTERVAL_S, parse_sse

MIN_STREAM_S = 2.5 * PING_INTERVAL_S
QUESTION = [{"role": "user", "content": "Tell me a long story about a dragon."}]


class TeeTransport(httpx.HTTPTransport):
    """An HTTP transport that keeps a copy of every response body it hands on."""

    def __init__(self) -> None:
        super().__init__()
        self.raw = bytearray()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        inner, raw = response.stream, self.raw

        class Tee(httpx.SyncByteStream):
            def __iter__(self) -> Iterator[bytes]:
                for chunk in inner:
                    raw.extend(chunk)
                    yield chunk

            def close(self) -> None:
                inner.close()

        return httpx.Response(
            response.status_code, headers=response.headers, stream=Tee(), extensions=response.extensions
        )


def tokens_for(oai: openai.OpenAI, model: str, seconds: float) -> int:
    """How many tokens this machine needs to stream for at least `seconds`.

    The speed is measured on a short request and doubled: a machine busy during the measurement
    and idle during the stream would otherwise stream too briefly to carry the pings.
    """
    started = time.monotonic()
    oai.completions.create(model=model, prompt="Hello", max_tokens=16, temperature=0, extra_body={"ignore_eos": True})
    per_token = (time.monotonic() - started) / 16
    return max(12, min(4000, math.ceil(2 * seconds / per_token)))


def test_sdk_parses_a_whole_stream_interleaved_with_pings(base_url: str, oai: openai.OpenAI, model_name: str) -> None:
    n = tokens_for(oai, model_name, MIN_STREAM_S)
    tee = TeeTransport()
    with httpx.Client(transport=tee, timeout=120.0) as http_client:
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", http_client=http_client, max_retries=0)
        started = time.monotonic()
        stream = client.chat.completions.create(
            model=model_name,
            messages=QUESTION,
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=n,
            temperature=0,
            extra_body={"ignore_eos": True},
        )
        chunks = list(stream)
        elapsed = time.monotonic() - started

    raw = tee.raw.decode("utf-8")
    parsed = parse_sse(raw)
    assert elapsed >= MIN_STREAM_S * 0.8, f"stream too short to carry pings ({elapsed:.1f} s)"
    assert parsed.comments and set(parsed.comments) == {"ping"}, raw[:500]
    assert ": ping\n\n" not in raw  # a comment never ends an (empty) event
    assert raw.startswith("id: ") and all(e.id for e in parsed.events)  # the id lines that made the SDK trip
    assert parsed.events[-1].data == "[DONE]"

    payloads = [json.loads(e.data) for e in parsed.events[:-1]]
    assert len(chunks) == len(payloads)
    sent = "".join((p["choices"][0]["delta"].get("content") or "") for p in payloads if p["choices"])
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == sent
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == n
