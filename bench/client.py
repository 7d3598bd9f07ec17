"""Drive N concurrent streaming clients against one server and time what arrives.

One *wave* is N requests started together; its aggregate throughput is all generated tokens over
the wall time of the whole wave. Time to first token (TTFT) is measured from sending the request
to the first content chunk; inter-token latency (ITL) is every gap between consecutive content
chunks of one stream, as the client sees them. Tokens are counted from the server's usage report
when it sends one, else as content chunks.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how a bicycle gear works.",
    "Describe the water cycle to a child.",
    "List some tips for learning to cook.",
    "What makes a good cup of tea?",
    "Tell me about the history of paper.",
    "How do bees make honey?",
    "Give advice for a first job interview.",
]


@dataclass
class Target:
    """Where and how to talk to one server; ``extra_body(n)`` forces answers of exactly n tokens,
    ``plain_body`` asks for plain greedy answers of their own length (no repetition penalty)."""

    base_url: str
    protocol: str  # "openai" (/v1/chat/completions) or "seed" (/stream)
    model: str = ""
    extra_body: Callable[[int], dict[str, Any]] = lambda n: {}
    plain_body: dict[str, Any] = field(default_factory=dict)
    pid: int | None = None  # the server's process, for its memory
    metrics: str = ""  # path of streamchat's Prometheus counters, if the server has them


@dataclass
class StreamResult:
    """What one streamed request produced, as seen by the client."""

    tokens: int = 0
    chunks: int = 0
    usage_tokens: int | None = None
    ttft: float | None = None
    gaps: list[float] = field(default_factory=list)
    seconds: float = 0.0
    done: bool = False  # saw ``data: [DONE]`` (transformers serve never sends it)
    finish_reason: str | None = None
    error: str | None = None
    prompt_tokens: int | None = None  # from the usage report
    text: str = ""


@dataclass
class WaveResult:
    """One wave of ``concurrency`` simultaneous requests."""

    concurrency: int
    wall: float
    streams: list[StreamResult]

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.streams)


def _body(target: Target, prompt: str, tokens: int, forced: bool = True) -> tuple[str, dict[str, Any]]:
    """Path and JSON body of one request in the target's protocol: a plain greedy answer (the
    target's `plain_body`: no repetition penalty, so every server decodes the same way), exactly
    `tokens` tokens long when `forced`, else of its own length up to `tokens`."""
    if target.protocol == "seed":
        return "/stream", {"prompt": prompt, "history": [], "temperature": 0, **target.extra_body(tokens)}
    body = {
        "model": target.model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "max_tokens": tokens,
        "temperature": 0,
        "stream_options": {"include_usage": True},
    }
    return "/v1/chat/completions", {**body, **target.plain_body, **(target.extra_body(tokens) if forced else {})}


def _content(target: Target, payload: dict[str, Any], result: StreamResult) -> str | None:
    """The text a data event carries (None when it carries none); records usage and finish."""
    if target.protocol == "seed":
        return payload.get("text", "")  # one event per generated token, even an empty one
    if payload.get("usage"):
        result.usage_tokens = payload["usage"].get("completion_tokens")
        result.prompt_tokens = payload["usage"].get("prompt_tokens")
    for choice in payload.get("choices") or []:
        result.finish_reason = choice.get("finish_reason") or result.finish_reason
        text = (choice.get("delta") or {}).get("content")
        if text:
            return text
    return None


async def _read(client: httpx.AsyncClient, target: Target, path: str, body: dict[str, Any]) -> StreamResult:
    """Send one request and read its SSE stream to the end."""
    result, start = StreamResult(), time.perf_counter()
    last = start
    async with client.stream("POST", target.base_url + path, json=body) as response:
        if response.status_code != 200:
            result.error = f"HTTP {response.status_code}: {(await response.aread())[:300]!r}"
            return result
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                result.done = True
                break
            payload = json.loads(data)
            if "error" in payload:
                result.error = str(payload["error"])[:300]
                continue
            text = _content(target, payload, result)
            if text is None:
                continue
            result.text += text
            now = time.perf_counter()
            if result.ttft is None:
                result.ttft = now - start
            else:
                result.gaps.append(now - last)
            last, result.chunks = now, result.chunks + 1
    result.seconds = time.perf_counter() - start
    result.tokens = result.usage_tokens if result.usage_tokens is not None else result.chunks
    return result


async def send(client: httpx.AsyncClient, target: Target, path: str, body: dict[str, Any]) -> StreamResult:
    """One streamed request, resent once if the server closed the connection before answering at all.

    Why: llama-server often drops a kept-alive connection right after a stream, and the next
    request on it gets no response; that says nothing about generation speed.
    """
    for attempt in range(2):
        try:
            return await _read(client, target, path, body)
        except (httpx.RemoteProtocolError, httpx.ConnectError) as exc:
            if attempt:
                return StreamResult(error=f"{type(exc).__name__}: {exc}")
        except (httpx.HTTPError, json.JSONDecodeError) as exc:
            return StreamResult(error=f"{type(exc).__name__}: {exc}")
    raise AssertionError("unreachable")


async def stream_once(
    client: httpx.AsyncClient, target: Target, prompt: str, tokens: int, forced: bool = True
) -> StreamResult:
    """One request of `tokens` tokens for `prompt` in the target's protocol (see `_body`)."""
    return await send(client, target, *_body(target, prompt, tokens, forced))


async def wave(
    target: Target,
    concurrency: int,
    tokens: int,
    timeout: float = 600.0,
    prompts: list[str] | None = None,
    forced: bool = True,
) -> WaveResult:
    """Start ``concurrency`` streams at once (prompts taken in turn) and wait for all of them to end."""
    prompts = prompts or PROMPTS
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(timeout)) as client:
        start = time.perf_counter()
        streams = await asyncio.gather(
            *(stream_once(client, target, prompts[i % len(prompts)], tokens, forced) for i in range(concurrency))
        )
        return WaveResult(concurrency, time.perf_counter() - start, list(streams))


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[min(98, max(0, round(q) - 1))]


def summarise(waves: list[WaveResult], tokens: int) -> dict[str, Any]:
    """Aggregate figures for one server at one concurrency over all its waves."""
    streams = [s for w in waves for s in w.streams]
    ttfts = [s.ttft for s in streams if s.ttft is not None]
    gaps = [g for s in streams for g in s.gaps]
    wall = sum(w.wall for w in waves)
    wrong = [s.tokens for s in streams if s.error is None and s.tokens != tokens]
    return {
        "concurrency": waves[0].concurrency if waves else 0,
        "waves": len(waves),
        "requests": len(streams),
        "errors": [s.error for s in streams if s.error],
        "exact": sum(1 for s in streams if s.error is None and s.tokens == tokens),
        "wrong_lengths": wrong,
        "tokens": sum(w.tokens for w in waves),
        "wall_s": wall,
        "tokens_per_s": sum(w.tokens for w in waves) / wall if wall else 0.0,
        "ttft_p50": percentile(ttfts, 50),
        "ttft_p99": percentile(ttfts, 99),
        "itl_p50": percentile(gaps, 50),
        "itl_p99": percentile(gaps, 99),
        "chunks_per_request": [s.chunks for s in streams],
        "usage_reported": any(s.usage_tokens is not None for s in streams),
        "done_seen": sum(1 for s in streams if s.done),
        "prompt_tokens": [s.prompt_tokens for s in streams],
        "prefill_tokens_per_s": _prefill_rate(waves),
        "decode_tokens_per_s": _decode_rate(streams),
        "texts": [s.text for s in streams],
    }


def _decode_rate(streams: list[StreamResult]) -> float | None:
    """Tokens after the first over the time after the first, summed over streams: the decoding
    speed alone, which prompt lookup changes and prefill does not blur. None without timings."""
    timed = [s for s in streams if s.ttft is not None and s.seconds > s.ttft and s.tokens > 1]
    after_first = sum(s.seconds - s.ttft for s in timed)  # type: ignore[operator]
    return sum(s.tokens - 1 for s in timed) / after_first if after_first else None


def _prefill_rate(waves: list[WaveResult]) -> float | None:
    """Prompt tokens over the time until the wave's last first token (every prompt prefilled by
    then), averaged over waves; None without usage reports."""
    rates = []
    for w in waves:
        ttfts = [s.ttft for s in w.streams if s.ttft is not None]
        prompt = [s.prompt_tokens for s in w.streams]
        if ttfts and None not in prompt:
            rates.append(sum(prompt) / max(ttfts))  # type: ignore[arg-type]
    return sum(rates) / len(rates) if rates else None
