"""Overload: ten times the server's capacity for a minute. Accepted work finishes; the rest is refused fast.

Capacity is `--max-num-seqs` running plus `--max-queue` waiting (8 + 8 here). With `--pattern
waves` (the default) 160 streaming requests start at once, and the next wave starts when all of
them are answered, until the duration is over. With `--pattern storm` 160 clients loop on their
own and a refused one tries again after 0-200 ms (not `Retry-After`): a retry storm. Measured: how many were accepted
and how many of those finished with `[DONE]`, how fast refusals come (p50/p99), whether each
carries `Retry-After`, time to first token of the accepted ones, and the server's RSS.

    .venv/bin/python -m bench.overload                    # 160 clients, 60 s, capacity 8 + 8
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

from bench.stress import RssSampler, log, machine_line, ms, serve

PROMPTS = ["Tell me about the sea.", "Name three colours.", "What is a prime number?", "Describe a cat."]


@dataclass
class Tally:
    statuses: Counter[int] = field(default_factory=Counter)
    refusal_s: list[float] = field(default_factory=list)
    ttft_s: list[float] = field(default_factory=list)
    missing_retry_after: int = 0
    finished: int = 0
    unfinished: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    accepted_per_wave: list[int] = field(default_factory=list)


async def one(client: httpx.AsyncClient, body: dict, tally: Tally) -> bool:
    """One request; whether it was accepted."""
    start = time.perf_counter()
    async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
        tally.statuses[resp.status_code] += 1
        if resp.status_code != 200:
            await resp.aread()
            tally.refusal_s.append(time.perf_counter() - start)
            tally.missing_retry_after += "retry-after" not in resp.headers
            return False
        first, done = None, False
        async for line in resp.aiter_lines():
            if first is None and line.startswith("data: ") and '"content":"' in line and '"content":""' not in line:
                first = time.perf_counter() - start
            done = done or line == "data: [DONE]"
        if first is not None:
            tally.ttft_s.append(first)
        tally.finished += done
        tally.unfinished += not done
        return True


def _body(tokens: int) -> dict:
    return {
        "messages": [{"role": "user", "content": random.choice(PROMPTS)}],
        "stream": True, "max_tokens": tokens, "temperature": 0, "ignore_eos": True, "resumable": False,
    }  # fmt: skip


async def worker(url: str, deadline: float, tokens: int, tally: Tally) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(120, connect=10)) as client:
        while time.monotonic() < deadline:
            try:
                accepted = await one(client, _body(tokens), tally)
            except httpx.HTTPError as exc:
                tally.errors[type(exc).__name__] += 1
                accepted = False
            if not accepted:
                await asyncio.sleep(random.uniform(0, 0.2))


async def waves(url: str, deadline: float, args: argparse.Namespace, tally: Tally) -> None:
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(120, connect=10), limits=limits) as client:
        while time.monotonic() < deadline:
            before = tally.statuses.get(200, 0)
            results = await asyncio.gather(
                *(one(client, _body(args.max_tokens), tally) for _ in range(args.clients)), return_exceptions=True
            )
            for r in results:
                if isinstance(r, BaseException):
                    tally.errors[type(r).__name__] += 1
            tally.accepted_per_wave.append(tally.statuses.get(200, 0) - before)


async def fire(url: str, args: argparse.Namespace) -> tuple[Tally, float]:
    tally = Tally()
    start = time.monotonic()
    deadline = start + args.duration
    if args.pattern == "waves":
        await waves(url, deadline, args, tally)
    else:
        await asyncio.gather(*(worker(url, deadline, args.max_tokens, tally) for _ in range(args.clients)))
    return tally, time.monotonic() - start


def run(args: argparse.Namespace) -> dict:
    flags = ["--max-num-seqs", str(args.max_num_seqs), "--max-queue", str(args.max_queue), "--log-level", "warning"]
    capacity = args.max_num_seqs + args.max_queue
    with serve("overload", *flags) as server:
        time.sleep(2)
        before = server.rss_mb()
        log(f"{args.clients} clients against capacity {capacity} for {args.duration:.0f} s")
        with RssSampler(server) as during:
            tally, wall = asyncio.run(fire(server.url, args))
        idle = server.wait_idle(timeout=60)
        after = server.rss_mb()
    accepted = tally.statuses.get(200, 0)
    refused = sum(n for s, n in tally.statuses.items() if s in (429, 503))
    return {
        "pattern": args.pattern,
        "clients": args.clients,
        "capacity": capacity,
        "waves": len(tally.accepted_per_wave) or None,
        "accepted_per_wave": sorted(set(tally.accepted_per_wave)) or None,
        "duration_s": round(wall, 1),
        "max_tokens": args.max_tokens,
        "statuses": dict(tally.statuses),
        "accepted": accepted,
        "accepted_finished": tally.finished,
        "accepted_unfinished": tally.unfinished,
        "refused": refused,
        "refused_without_retry_after": tally.missing_retry_after,
        "refusal_ms_p50": ms(tally.refusal_s, 50),
        "refusal_ms_p99": ms(tally.refusal_s, 99),
        "refusal_ms_max": f"{max(tally.refusal_s, default=0) * 1000:.1f}",
        "accepted_ttft_ms_p50": ms(tally.ttft_s, 50),
        "accepted_ttft_ms_p99": ms(tally.ttft_s, 99),
        "client_errors": dict(tally.errors),
        "rss_before_mb": round(before, 1),
        "rss_peak_mb": round(during.peak, 1),
        "rss_after_mb": round(after, 1),
        "idle_after": idle,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pattern", choices=["waves", "storm"], default="waves")
    p.add_argument("--clients", type=int, default=160)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--max-num-seqs", type=int, default=8)
    p.add_argument("--max-queue", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=32)
    args = p.parse_args(argv)
    print(json.dumps({"machine": machine_line(), **run(args)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
