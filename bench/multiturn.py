"""Time to first token of each turn of one growing chat, against one OpenAI-compatible server.

Why: a server that re-encodes the whole history every turn gets slower to answer turn after
turn; one that keeps or reuses the prefix's KV cache should not. Run a server first, then e.g.
``python -m bench.multiturn --base-url http://127.0.0.1:8000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import httpx

QUESTIONS = [
    "Hi! I am planning a small vegetable garden.",
    "Which vegetables are easiest for a beginner?",
    "How much sun do tomatoes need?",
    "And how often should I water them?",
    "What about lettuce in summer?",
    "Can I grow herbs next to the tomatoes?",
    "Which pests should I watch out for?",
    "How do I keep slugs away without chemicals?",
    "When should I harvest the carrots?",
    "Summarise the plan we talked about.",
]


async def turn(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> tuple[float | None, str, float]:
    """Stream one answer; returns (time to first content chunk, the answer, total seconds)."""
    start, ttft, parts = time.perf_counter(), None, []
    async with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                continue
            for choice in json.loads(line[5:]).get("choices") or []:
                text = (choice.get("delta") or {}).get("content")
                if text:
                    ttft = ttft if ttft is not None else time.perf_counter() - start
                    parts.append(text)
    return ttft, "".join(parts), time.perf_counter() - start


async def chat(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Ask the questions in order, each with the whole conversation so far."""
    # No kept-alive connections: llama-server often drops one after a stream (see bench/client.py).
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=httpx.Timeout(args.timeout), limits=limits) as client:
        model = args.model or (await client.get(args.base_url + "/v1/models")).json()["data"][0]["id"]
        messages: list[dict[str, str]] = []
        results = []
        for i, question in enumerate(QUESTIONS[: args.turns]):
            messages.append({"role": "user", "content": question})
            body = {
                "model": model,
                "messages": messages,
                "stream": True,
                "max_tokens": args.tokens,
                "temperature": 0,
            }
            ttft, answer, total = await turn(client, args.base_url + "/v1/chat/completions", body)
            messages.append({"role": "assistant", "content": answer})
            chars = sum(len(m["content"]) for m in messages)
            results.append({"turn": i + 1, "ttft_s": ttft, "total_s": total, "history_chars": chars})
            ttft_ms = "—" if ttft is None else f"{ttft * 1000:.0f}"
            print(f"| {i + 1} | {ttft_ms} | {total:.2f} | {chars} |", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.multiturn", description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8000", help="server root, without /v1")
    parser.add_argument("--model", default="", help="model name (default: first of GET /v1/models)")
    parser.add_argument("--turns", type=int, default=10, help=f"at most {len(QUESTIONS)}")
    parser.add_argument("--tokens", type=int, default=64, help="max_tokens per answer")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--json", help="also write the per-turn results to this file")
    args = parser.parse_args(argv)
    args.base_url = args.base_url.rstrip("/").removesuffix("/v1")
    print("| turn | TTFT ms | total s | history chars |\n|---|---|---|---|", flush=True)
    results = asyncio.run(chat(args))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
