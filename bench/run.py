"""``make bench``: run each chosen server alone, at each concurrency, and report side by side.

Servers run one after another, never two at once: on a 2-core machine two servers would measure
each other. A level that runs past its time budget stops that server's higher levels too.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench.client import Target, wave
from bench.client import summarise as summarise_waves
from bench.idle import busy_fraction, wait_for_idle
from bench.peers import PEERS, Unavailable, running
from bench.report import machine, markdown

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_SERVERS = "seed,transformers-serve,llama-server,llama-cpp-server,streamchat,streamchat-llamacpp"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default=DEFAULT_SERVERS, help=f"comma list from: {', '.join(PEERS)}")
    parser.add_argument("--concurrency", default="1,4,16", help="comma list of concurrent streams")
    parser.add_argument("--tokens", type=int, default=64, help="generated tokens per request")
    parser.add_argument("--waves", type=int, default=1, help="measured waves per level")
    parser.add_argument("--level-budget", type=float, default=180.0, help="seconds one level may take")
    parser.add_argument("--max-busy", type=float, default=0.15, help="CPU share counted as idle")
    parser.add_argument("--idle-wait", type=float, default=120.0, help="seconds to wait for idle per server")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest", help="writes OUT.md and OUT.json")
    args = parser.parse_args(argv)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    unknown = [s for s in args.servers if s not in PEERS]
    if unknown:
        parser.error(f"unknown server(s) {unknown}; known: {', '.join(PEERS)}")
    return args


async def measure_level(target: Target, concurrency: int, args: argparse.Namespace) -> dict[str, Any]:
    """Up to ``args.waves`` waves within the level's budget; a wave past the budget is cut."""
    waves, start = [], time.monotonic()
    for _ in range(args.waves):
        left = args.level_budget - (time.monotonic() - start)
        if left <= 0:
            break
        try:
            waves.append(await asyncio.wait_for(wave(target, concurrency, args.tokens), timeout=left))
        except TimeoutError:
            return {"concurrency": concurrency, "timed_out": True, "wall_s": time.monotonic() - start}
    return summarise_waves(waves, args.tokens)


async def measure_server(target: Target, args: argparse.Namespace, name: str) -> list[dict[str, Any]]:
    """Warm up (first requests pay for lazy loading and allocation), then every level."""
    await asyncio.wait_for(wave(target, 2, min(args.tokens, 16)), timeout=args.level_budget)
    levels = []
    for concurrency in args.concurrency:
        level = await measure_level(target, concurrency, args)
        levels.append(level)
        if level.get("timed_out"):
            _log(f"  {name} C={concurrency}: timed out; skipping higher levels")
            break
        _log(
            f"  {name} C={concurrency}: {level['tokens_per_s']:.1f} tok/s, "
            f"exact {level['exact']}/{level['requests']}, errors {len(level['errors'])}"
        )
    return levels


def run_server(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Start, measure and stop one server; a server that cannot start is reported as skipped."""
    peer = PEERS[name]
    busy = wait_for_idle(args.max_busy, args.idle_wait) if args.idle_wait > 0 else busy_fraction()
    _log(f"{name}: starting (CPU {busy:.0%} busy before start)")
    try:
        with running(peer) as target:
            _log(f"{name}: ready at {target.base_url} (model {target.model or '-'})")
            levels = asyncio.run(measure_server(target, args, name))
            return {"note": peer.note, "busy_before": busy, "levels": levels}
    except Unavailable as exc:
        _log(f"{name}: SKIPPED: {exc}")
        return {"note": peer.note, "skipped": str(exc), "levels": []}
    except TimeoutError:
        _log(f"{name}: SKIPPED: warm-up did not finish within {args.level_budget:.0f} s")
        return {"note": peer.note, "skipped": "warm-up timed out", "levels": []}


def _stop_on_signals() -> None:
    """Turn SIGTERM/SIGINT into exceptions so that the running server is stopped on the way out.

    Why: a run started with ``&`` inherits SIGINT ignored, and SIGTERM would otherwise kill the
    harness at once and leave its server orphaned.
    """

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _stop_on_signals()
    args = parse_args(argv)
    run = {
        "started": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "command": shlex.join(["python", "-m", "bench.run", *argv]),
        "machine": machine(),
        "tokens": args.tokens,
        "waves": args.waves,
        "concurrency": args.concurrency,
        "servers": {name: run_server(name, args) for name in args.servers},
    }
    text = markdown(run)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(run, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
