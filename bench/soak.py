"""Soak: thousands of greedy streams, many dropped at random points. Nothing leaks, nothing changes.

Reference answers are computed first, one non-streamed request per prompt. Then `--requests`
streaming requests run `--concurrency` at a time; a `--drop` share of them hang up after a random
number of events. All opt out of resumption (`"resumable": false`), so a dropped stream stops
generating at once. Afterwards: nothing may be left running, RSS may have grown at most
`--max-growth-mb` since the warm-up, and every stream read to its end must equal its reference.

    .venv/bin/python -m bench.soak                          # 2,000 requests, 32 at a time, 30 % dropped
    .venv/bin/python -m bench.soak --requests 500           # a shorter run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from bench.stress import RssSampler, Server, log, machine_line, serve

PROMPTS = [
    "Tell me about the sea.",
    "Name three colours.",
    "What is a prime number?",
    "Describe a cat in one sentence.",
    "Why is the sky blue?",
    "Give me a tip for learning to cook.",
    "What does a compiler do?",
    "Write a line of a poem about rain.",
]


@dataclass
class Tally:
    completed: int = 0
    dropped: int = 0
    mismatched: list[tuple[str, str, str]] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    rss_mb: list[tuple[int, float]] = field(default_factory=list)


def _body(prompt: str, tokens: int, stream: bool) -> dict:
    return {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens, "temperature": 0, "stream": stream, "resumable": False,
    }  # fmt: skip


def references(server: Server, tokens: int) -> dict[str, str]:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        out = {}
        for prompt in PROMPTS:
            resp = client.post("/v1/chat/completions", json=_body(prompt, tokens, stream=False))
            resp.raise_for_status()
            out[prompt] = resp.json()["choices"][0]["message"]["content"]
        return out


async def one(client: httpx.AsyncClient, prompt: str, drop_after: int | None, refs: dict, tally: Tally) -> None:
    parts, events, done = [], 0, False
    async with client.stream("POST", "/v1/chat/completions", json=_body(prompt, refs["tokens"], True)) as resp:
        tally.statuses[resp.status_code] += 1
        if resp.status_code != 200:
            await resp.aread()
            return
        async for line in resp.aiter_lines():
            if not line.startswith("data: "):
                continue
            if drop_after is not None and events >= drop_after:
                tally.dropped += 1
                return  # leaving the block closes the connection mid-stream
            events += 1
            if line == "data: [DONE]":
                done = True
                break
            delta = json.loads(line[6:])["choices"][0]["delta"]
            parts.append(delta.get("content") or "")
    if done:
        tally.completed += 1
        text = "".join(parts)
        if text != refs["text"][prompt]:
            tally.mismatched.append((prompt, refs["text"][prompt], text))


async def soak(server: Server, args: argparse.Namespace, refs: dict, tally: Tally) -> None:
    rng = random.Random(args.seed)
    jobs = [
        (rng.choice(PROMPTS), rng.randint(0, args.max_tokens + 1) if rng.random() < args.drop else None)
        for _ in range(args.requests)
    ]
    queue: asyncio.Queue[tuple[int, tuple]] = asyncio.Queue()
    for item in enumerate(jobs):
        queue.put_nowait(item)

    async def worker() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(120, connect=10)) as client:
            while not queue.empty():
                i, (prompt, drop_after) = queue.get_nowait()
                try:
                    await one(client, prompt, drop_after, refs, tally)
                except httpx.HTTPError as exc:
                    tally.errors[type(exc).__name__] += 1
                if (i + 1) % args.report_every == 0:
                    tally.rss_mb.append((i + 1, round(server.rss_mb(), 1)))
                    log(f"{i + 1}/{args.requests} done; RSS {server.rss_mb():.0f} MB")

    await asyncio.gather(*(worker() for _ in range(args.concurrency)))


def run(args: argparse.Namespace) -> dict:
    flags = ["--max-num-seqs", str(args.concurrency), "--log-level", "warning"]
    flags += ["--engine", args.engine]
    with serve("soak", *flags) as server:
        refs = {"tokens": args.max_tokens, "text": references(server, args.max_tokens)}
        tally = Tally()
        warm = Tally()
        warm_args = argparse.Namespace(**{**vars(args), "requests": args.warmup, "report_every": 10**9})
        asyncio.run(soak(server, warm_args, refs, warm))  # warm-up: allocator pools, caches, first batches
        server.wait_idle()
        after_warmup = server.rss_mb()
        start = time.monotonic()
        with RssSampler(server, interval=1.0) as sampler:
            asyncio.run(soak(server, args, refs, tally))
        wall = time.monotonic() - start
        idle = server.wait_idle(timeout=60)
        time.sleep(2)
        end = server.rss_mb()
        health = server.health()
    return {
        "engine": args.engine,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "drop_share": args.drop,
        "max_tokens": args.max_tokens,
        "wall_s": round(wall, 1),
        "statuses": dict(tally.statuses),
        "completed": tally.completed,
        "dropped": tally.dropped,
        "mismatched": len(tally.mismatched),
        "mismatch_examples": tally.mismatched[:3],
        "client_errors": dict(tally.errors),
        "running_after": health["running"],
        "waiting_after": health["waiting"],
        "idle_after": idle,
        "engine_aborted": health["aborted"],
        "stream_disconnects": health["streams"]["disconnects"],
        "rss_after_warmup_mb": round(after_warmup, 1),
        "rss_peak_mb": round(sampler.peak, 1),
        "rss_end_mb": round(end, 1),
        "rss_growth_mb": round(end - after_warmup, 1),
        "rss_by_request_mb": tally.rss_mb,
        "ok": idle and health["running"] == 0 and not tally.mismatched and end - after_warmup < args.max_growth_mb,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--drop", type=float, default=0.3, help="share of requests that hang up mid-stream")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--warmup", type=int, default=100, help="requests run before the RSS baseline is taken")
    p.add_argument("--max-growth-mb", type=float, default=50.0)
    p.add_argument("--report-every", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engine", default="auto", help="the server's --engine")
    args = p.parse_args(argv)
    result = run(args)
    print(json.dumps({"machine": machine_line(), **result}, indent=2, ensure_ascii=False))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
