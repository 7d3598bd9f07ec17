"""``make bench``: run each chosen server alone, at each concurrency, and report side by side.

Requests never go to two servers at once: on a 2-core machine two servers would measure each
other. By default the servers run one after another. With ``--side-by-side`` they are all started
first and take turns, wave by wave at each level (and level by level for the long-prompt and edit
levels), so that the machine's drift (±15 % within minutes here) falls on every server alike; an
idle server costs the others nothing measurable (< 1 % of a core). A level that runs past its
time budget stops that server's higher levels too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.chart import svg
from bench.client import Target, wave
from bench.client import summarise as summarise_waves
from bench.idle import busy_fraction, wait_for_idle
from bench.peers import PEERS, Unavailable, running
from bench.report import machine, markdown
from bench.rss import PeakRss, rss_mb
from bench.workloads import EDIT_PROMPTS, long_prompt

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
    parser.add_argument("--long", default="1,4", help="concurrency of the ≈1,500-token prompt level ('': none)")
    parser.add_argument("--long-tokens", type=int, default=8, help="tokens generated per long prompt")
    parser.add_argument("--edit", default="1", help="concurrency of the edit level ('': none)")
    parser.add_argument("--edit-tokens", type=int, default=256, help="most tokens of an edit answer")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest", help="writes OUT.md, OUT.json and OUT.svg")
    parser.add_argument("--side-by-side", action="store_true", help="all servers up at once, waves taking turns")
    args = parser.parse_args(argv)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.long = [int(c) for c in args.long.split(",") if c.strip()]
    args.edit = [int(c) for c in args.edit.split(",") if c.strip()]
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


async def measure_server(target: Target, args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Warm up (first requests pay for lazy loading and allocation), then every level; the peak RSS
    of each. Long-prompt and edit levels need the OpenAI protocol."""
    await asyncio.wait_for(wave(target, 2, min(args.tokens, 16)), timeout=args.level_budget)
    levels = []
    for concurrency in args.concurrency:
        with PeakRss(target.pid) as rss:
            level = await measure_level(target, concurrency, args)
        level.pop("texts", None)
        levels.append({**level, "rss_peak_mb": rss.peak, "others_busy": rss.others_busy})
        if level.get("timed_out"):
            _log(f"  {name} C={concurrency}: timed out; skipping higher levels")
            break
        _log(
            f"  {name} C={concurrency}: {level['tokens_per_s']:.1f} tok/s, "
            f"exact {level['exact']}/{level['requests']}, errors {len(level['errors'])}, RSS peak {rss.peak:.0f} MiB, "
            f"others' CPU {rss.others_busy:.0%}"
        )
    openai = target.protocol == "openai"
    return {
        "levels": levels,
        "long": [await measure_long(target, c, args, name) for c in args.long] if openai else [],
        "edit": [await measure_edit(target, c, args, name) for c in args.edit] if openai else [],
    }


_long_prompts_sent = 0  # every long prompt is new to every server: no cached prefix answers it


async def measure_long(target: Target, concurrency: int, args: argparse.Namespace, name: str) -> dict[str, Any]:
    """≈1,500-token prompts, each different, `args.long_tokens` tokens out: time to first token."""
    global _long_prompts_sent
    waves = []
    with PeakRss(target.pid) as rss:
        for _ in range(args.waves):
            prompts = [long_prompt(_long_prompts_sent + i) for i in range(concurrency)]
            _long_prompts_sent += concurrency
            try:
                waves.append(await asyncio.wait_for(
                    wave(target, concurrency, args.long_tokens, prompts=prompts), timeout=args.level_budget
                ))  # fmt: skip
            except TimeoutError:
                _log(f"  {name} long C={concurrency}: timed out")
                return {"concurrency": concurrency, "timed_out": True, "wall_s": args.level_budget}
    level = {**summarise_waves(waves, args.long_tokens), "rss_peak_mb": rss.peak, "others_busy": rss.others_busy}
    level.pop("texts", None)
    rate = level["prefill_tokens_per_s"]
    _log(f"  {name} long C={concurrency}: TTFT p50 {level['ttft_p50']:.2f} s, prefill {rate or 0:.0f} tok/s")
    return level


async def measure_edit(target: Target, concurrency: int, args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Answers that copy most of their prompt, plain greedy, of their own length: one wave per edit
    prompt (each sent `concurrency` times); with streamchat's counters, the drafts' acceptance."""
    before = _spec_counters(target)
    waves = []
    with PeakRss(target.pid) as rss:
        for prompt in EDIT_PROMPTS:
            try:
                waves.append(await asyncio.wait_for(
                    wave(target, concurrency, args.edit_tokens, prompts=[prompt], forced=False),
                    timeout=args.level_budget,
                ))  # fmt: skip
            except TimeoutError:
                _log(f"  {name} edit C={concurrency}: timed out")
                return {"concurrency": concurrency, "timed_out": True, "wall_s": args.level_budget}
    level = {**summarise_waves(waves, args.edit_tokens), "rss_peak_mb": rss.peak, "others_busy": rss.others_busy}
    after = _spec_counters(target)
    if before is not None and after is not None:
        level["drafted"], level["accepted"] = after[0] - before[0], after[1] - before[1]
    _log(f"  {name} edit C={concurrency}: {level['tokens_per_s']:.1f} tok/s")
    return level


def _spec_counters(target: Target) -> tuple[float, float] | None:
    """streamchat's draft and accepted token counters (None for a server without them)."""
    if not target.metrics:
        return None
    text = httpx.get(target.base_url + target.metrics, timeout=10).text
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("streamchat_spec_draft_tokens_total", "streamchat_spec_accepted_tokens_total"):
            values[name] = float(value)
    if len(values) < 2:
        return None
    return values["streamchat_spec_draft_tokens_total"], values["streamchat_spec_accepted_tokens_total"]


def run_server(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Start, measure and stop one server; a server that cannot start is reported as skipped."""
    peer = PEERS[name]
    busy = wait_for_idle(args.max_busy, args.idle_wait) if args.idle_wait > 0 else busy_fraction()
    _log(f"{name}: starting (CPU {busy:.0%} busy before start)")
    try:
        with running(peer) as target:
            time.sleep(2.0)  # what a started server holds once it settles, before any request
            idle = rss_mb(target.pid) if target.pid is not None else None
            _log(f"{name}: ready at {target.base_url} (model {target.model or '-'}), RSS {idle or 0:.0f} MiB")
            measured = asyncio.run(measure_server(target, args, name))
            return {"note": peer.note, "busy_before": busy, "rss_idle_mb": idle, **measured}
    except Unavailable as exc:
        _log(f"{name}: SKIPPED: {exc}")
        return {"note": peer.note, "skipped": str(exc), "levels": []}
    except TimeoutError:
        _log(f"{name}: SKIPPED: warm-up did not finish within {args.level_budget:.0f} s")
        return {"note": peer.note, "skipped": "warm-up timed out", "levels": []}


def run_side_by_side(names: list[str], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Start every server, then measure them in turns (`_take_turns`); stop them all at the end."""
    results: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        targets: dict[str, Target] = {}
        for name in names:
            peer = PEERS[name]
            busy = wait_for_idle(args.max_busy, args.idle_wait) if args.idle_wait > 0 else busy_fraction()
            _log(f"{name}: starting (CPU {busy:.0%} busy before start)")
            try:
                target = stack.enter_context(running(peer))
            except Unavailable as exc:
                _log(f"{name}: SKIPPED: {exc}")
                results[name] = {"note": peer.note, "skipped": str(exc), "levels": []}
                continue
            time.sleep(2.0)  # what a started server holds once it settles, before any request
            idle = rss_mb(target.pid) if target.pid is not None else None
            _log(f"{name}: ready at {target.base_url} (model {target.model or '-'}), RSS {idle or 0:.0f} MiB")
            results[name] = {"note": peer.note, "busy_before": busy, "rss_idle_mb": idle}
            targets[name] = target
        asyncio.run(_take_turns(targets, results, args))
    return {name: results[name] for name in names}


async def _take_turns(targets: dict[str, Target], results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    live = dict(targets)
    for name, target in targets.items():
        try:
            await asyncio.wait_for(wave(target, 2, min(args.tokens, 16)), timeout=args.level_budget)
        except TimeoutError:
            _log(f"{name}: SKIPPED: warm-up did not finish within {args.level_budget:.0f} s")
            results[name] = {**results[name], "skipped": "warm-up timed out", "levels": []}
            del live[name]
    for name in live:
        results[name]["levels"] = []
    for concurrency in args.concurrency:
        waves: dict[str, list] = {name: [] for name in live}
        peak = dict.fromkeys(live, 0.0)
        others: dict[str, list[float]] = {name: [] for name in live}
        for _ in range(args.waves):
            for name, target in list(live.items()):
                with PeakRss(target.pid) as rss:
                    try:
                        waves[name].append(await asyncio.wait_for(
                            wave(target, concurrency, args.tokens), timeout=args.level_budget
                        ))  # fmt: skip
                    except TimeoutError:
                        _log(f"  {name} C={concurrency}: timed out; skipping higher levels")
                        results[name]["levels"].append({"concurrency": concurrency, "timed_out": True})
                        del live[name]
                        continue
                peak[name], others[name] = max(peak[name], rss.peak), [*others[name], rss.others_busy]
        for name in live:
            level = summarise_waves(waves[name], args.tokens)
            level.pop("texts", None)
            busy = sum(others[name]) / len(others[name])
            results[name]["levels"].append({**level, "rss_peak_mb": peak[name], "others_busy": busy})
            _log(
                f"  {name} C={concurrency}: {level['tokens_per_s']:.1f} tok/s, exact {level['exact']}/"
                f"{level['requests']}, RSS peak {peak[name]:.0f} MiB, others' CPU {busy:.0%}"
            )
    openai = {n: t for n, t in targets.items() if t.protocol == "openai" and not results[n].get("skipped")}
    for name in targets:
        results[name].setdefault("long", [])
        results[name].setdefault("edit", [])
    for concurrency in args.long:
        for name, target in openai.items():
            results[name]["long"].append(await measure_long(target, concurrency, args, name))
    for concurrency in args.edit:
        for name, target in openai.items():
            results[name]["edit"].append(await measure_edit(target, concurrency, args, name))


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
        "long": {"concurrency": args.long, "tokens": args.long_tokens},
        "edit": {"concurrency": args.edit, "tokens": args.edit_tokens, "prompts": len(EDIT_PROMPTS)},
        "side_by_side": args.side_by_side,
        "servers": (
            run_side_by_side(args.servers, args)
            if args.side_by_side
            else {name: run_server(name, args) for name in args.servers}
        ),
    }
    chart = args.out.with_suffix(".svg")
    text = markdown(run, chart.name)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(run, indent=2) + "\n")
    chart.write_text(svg(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
