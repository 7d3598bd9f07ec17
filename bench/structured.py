"""Structured outputs: what a JSON schema costs streamchat, and how it compares with llama-server's.

For each server (one after another, never two at once) and each concurrency C, the (prompt, schema)
cases of `bench/json_schemas.py` are sent by C clients in a closed loop (each client sends its next
request as soon as its previous answer ends), greedy, streamed:

1. *constrained*: `response_format: {"type": "json_schema", ...}`; an answer ends when its JSON does
   (or at `--max-tokens`). Every answer is parsed and validated (`jsonschema`, formats checked).
2. *free*: the same prompts without `response_format`. By default each free request is forced to
   exactly the length its constrained twin had (the server's own length knob, as in `bench.run`), so
   both modes run the same number of tokens in the same batch shapes and only the grammar differs;
   `--free natural` lets free answers end at EOS or `--max-tokens` instead.

Throughput is generated tokens (usage reports) over the wall time of the whole level. After each
constrained level streamchat's per-step mask time is read from `/metrics`. The CPU time other
processes took during each level is measured: on 2 cores it changes the figures, so a disturbed
level is measured again once the machine is idle (`--retries`), and reported as disturbed if it stays so.

    python -m bench.structured                  # both servers, C=1 and 16, all 50 cases
    python -m bench.structured --quick          # 16 cases, 128 tokens at most: a few minutes
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import re
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import psutil

from bench.client import StreamResult, Target, _body, percentile, send
from bench.idle import busy_fraction, wait_for_idle
from bench.json_schemas import CASES
from bench.peers import PEERS, Unavailable, running
from bench.report import _ms, machine
from bench.run import _log, _stop_on_signals

RESULTS = Path(__file__).resolve().parent / "results"
SERVERS = ("streamchat", "llama-server")
BASELINE = "llama-server"  # the peer whose grammar engine streamchat's is compared with
TARGET_VS_FREE = 0.9  # issue 13: constrained tokens/s at least 0.9x free, at 1 and 16 streams
TARGET_VS_LLAMA = 1.5  # issue 13: at least 1.5x llama-server's constrained tokens/s at 16 streams
OPENAI_PEERS = [name for name, peer in PEERS.items() if peer.protocol == "openai"]
NOISY = 0.10  # other processes' share of the CPUs during a level above which its figures are flagged
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def format_checker() -> jsonschema.FormatChecker:
    """jsonschema's checker, plus `date-time` (only checked there when rfc3339-validator is installed)."""
    checker = jsonschema.FormatChecker()
    if "date-time" not in checker.checkers:

        @checker.checks("date-time", raises=ValueError)
        def _date_time(value: object) -> bool:
            if not isinstance(value, str):
                return True
            if not RFC3339.match(value):
                return False
            datetime.datetime.fromisoformat(value.upper().replace("Z", "+00:00"))  # raises on 2026-13-40
            return True

    return checker


CHECKER = format_checker()


@dataclass
class Job:
    """One request of a level: which case, and (free mode) the exact length to force, if any."""

    case: int
    constrained: bool
    max_tokens: int
    forced: bool = False


@dataclass
class Answer:
    """One request's stream and text, as the client received them."""

    job: Job
    stream: StreamResult

    @property
    def text(self) -> str:
        return self.stream.text


@dataclass
class CpuMeter:
    """Busy CPU seconds of the whole machine and of this process tree (client + server) over a span.

    Why: the idle check before a server starts cannot see a test run that starts mid-level.
    """

    system: float = 0.0
    ours: float = 0.0
    wall: float = 0.0
    started: float = field(default_factory=time.monotonic)

    @staticmethod
    def _now() -> tuple[float, float]:
        t = psutil.cpu_times()
        # guest time is already counted in user time; steal (the host running others) counts as busy
        busy = sum(t) - t.idle - sum(getattr(t, k, 0.0) for k in ("iowait", "guest", "guest_nice"))
        me = psutil.Process()
        ours = 0.0
        for proc in [me, *me.children(recursive=True)]:
            try:
                c = proc.cpu_times()
            except psutil.Error:
                continue
            ours += c.user + c.system
        return busy, ours

    def __enter__(self) -> CpuMeter:
        self.system, self.ours = self._now()
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        system, ours = self._now()
        self.system, self.ours = system - self.system, ours - self.ours
        self.wall = time.monotonic() - self.started

    def others_share(self) -> float:
        """Share of all CPUs that processes outside this tree kept busy (0.0 to 1.0)."""
        capacity = self.wall * psutil.cpu_count()
        return max(0.0, self.system - self.ours) / capacity if capacity else 0.0


def request_body(target: Target, job: Job) -> tuple[str, dict[str, Any]]:
    """The request in OpenAI's chat format, plain greedy on every server (no repetition penalty, so
    both decode the same model the same way); the peer's length knob only when a length is forced."""
    prompt, schema = CASES[job.case]
    path, body = _body(target, f"{prompt} Answer in JSON.", job.max_tokens, forced=False)
    if job.constrained:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    if job.forced:
        body.update(target.extra_body(job.max_tokens))
    return path, body


async def ask(client: httpx.AsyncClient, target: Target, job: Job) -> Answer:
    """One request, its text kept (bench.client keeps each stream's text)."""
    return Answer(job, await send(client, target, *request_body(target, job)))


async def closed_loop(target: Target, jobs: list[Job], concurrency: int) -> tuple[list[Answer], float]:
    """C clients take the next job as soon as their last answer ended; (answers in job order, wall s).

    Why not waves of C: constrained answers differ in length, and a wave would wait for its
    longest answer with most rows idle.
    """
    answers: list[Answer | None] = [None] * len(jobs)
    todo = iter(range(len(jobs)))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(600.0)) as client:

        async def worker() -> None:
            for i in todo:
                answers[i] = await ask(client, target, jobs[i])

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return [a for a in answers if a is not None], wall


def validity(answer: Answer) -> str | None:
    """None when the answer parses and validates against its case's schema, else why not."""
    if answer.stream.error:
        return answer.stream.error
    try:
        jsonschema.validate(json.loads(answer.text), CASES[answer.job.case][1], format_checker=CHECKER)
    except json.JSONDecodeError as exc:
        return f"not JSON ({exc.msg}; finish {answer.stream.finish_reason})"
    except jsonschema.ValidationError as exc:
        return f"invalid: {exc.message[:120]}"
    return None


def summarise(answers: list[Answer], wall: float, cpu: CpuMeter) -> dict[str, Any]:
    """One level's figures; for constrained levels also which answers fail their schema and why."""
    streams = [a.stream for a in answers]
    tokens = sum(s.tokens for s in streams if s.error is None)
    ttfts = [s.ttft for s in streams if s.ttft is not None]
    gaps = [g for s in streams for g in s.gaps]
    out: dict[str, Any] = {
        "requests": len(answers),
        "errors": [f"case {a.job.case}: {a.stream.error}" for a in answers if a.stream.error],
        "tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall if wall else 0.0,
        "ttft_p50": percentile(ttfts, 50),
        "ttft_p99": percentile(ttfts, 99),
        "itl_p50": percentile(gaps, 50),
        "itl_p99": percentile(gaps, 99),
        "finish_length": sum(1 for s in streams if s.finish_reason == "length"),
        "others_cpu": cpu.others_share(),
        "lengths": [s.tokens for s in streams],
    }
    if answers and answers[0].job.constrained:
        checked = [(a, validity(a)) for a in answers]
        out["valid"] = sum(1 for _, why in checked if why is None)
        out["invalid"] = {str(a.job.case): f"{why}: {a.text[:80]!r}" for a, why in checked if why is not None}
        out["refused"] = sorted({a.job.case for a in answers if (a.stream.error or "").startswith("HTTP 4")})
    elif any(a.job.forced for a in answers):
        out["forced_exact"] = sum(1 for a in answers if a.job.forced and a.stream.tokens == a.job.max_tokens)
    return out


def scrape_metrics(base_url: str) -> dict[str, float]:
    """streamchat's grammar-mask quantiles and engine step count; {} from a server without them."""
    try:
        text = httpx.get(base_url + "/metrics", timeout=10).text
    except httpx.HTTPError:
        return {}
    found = {}
    for m in re.finditer(r'^streamchat_grammar_mask_seconds\{quantile="([0-9.]+)"\} (\S+)$', text, re.M):
        found[f"mask_p{round(float(m.group(1)) * 100)}"] = float(m.group(2))
    steps = re.search(r"^streamchat_engine_steps(?:_total)? (\S+)$", text, re.M)
    if steps:
        found["steps"] = float(steps.group(1))
    return found


def jobs_for(cases: list[int], concurrency: int, rounds: int, max_tokens: int) -> list[Job]:
    """`rounds` passes over the cases, and at least one request per client."""
    count = max(concurrency, rounds * len(cases))
    return [Job(cases[i % len(cases)], True, max_tokens) for i in range(count)]


def free_twins(constrained: list[Answer], args: argparse.Namespace) -> list[Job]:
    """The free requests of a level: forced to their constrained twin's length, or natural."""
    if args.free == "natural":
        return [Job(a.job.case, False, args.max_tokens) for a in constrained]
    return [Job(a.job.case, False, max(1, a.stream.tokens or args.max_tokens), forced=True) for a in constrained]


async def run_once(target: Target, jobs: list[Job], concurrency: int, budget: float) -> dict[str, Any]:
    """One attempt at a level; a level past its budget is reported as timed out."""
    with CpuMeter() as cpu:
        try:
            answers, wall = await asyncio.wait_for(closed_loop(target, jobs, concurrency), timeout=budget)
        except TimeoutError:
            answers, wall = [], budget
    if not answers:
        return {"timed_out": True, "wall_s": wall, "requests": len(jobs), "others_cpu": cpu.others_share()}
    level = summarise(answers, wall, cpu)
    level["_answers"] = answers  # dropped before the JSON is written
    return level


async def run_level(
    target: Target, jobs: list[Job], concurrency: int, args: argparse.Namespace, masks: str | None = None
) -> dict[str, Any]:
    """A level, measured again (after waiting for idle) while other processes took the CPUs during it.

    Why: this machine is shared, and a test run that starts mid-level halves a server's figures;
    the idle check before the server started cannot see it. `masks` (the first level or not)
    asks for streamchat's mask times after the level.
    """
    for attempt in range(1, args.retries + 2):
        before = scrape_metrics(target.base_url) if masks else {}
        level = await run_once(target, jobs, concurrency, args.level_budget)
        if masks:
            level["mask"] = _mask_window(before, scrape_metrics(target.base_url), first=masks == "first")
        level["attempts"] = attempt
        if level["others_cpu"] <= NOISY or attempt > args.retries:
            return level
        _log(f"  C={concurrency}: other processes took {level['others_cpu']:.0%} of the CPUs; measuring again")
        await asyncio.to_thread(wait_for_idle, args.max_busy, args.idle_wait)
    raise AssertionError("unreachable")


def _mask_window(before: dict[str, float], after: dict[str, float], first: bool) -> dict[str, Any] | None:
    """The mask quantiles after a level, and which steps the server's window of them holds."""
    if "mask_p50" not in after:
        return None
    steps = after.get("steps", 0.0) - before.get("steps", 0.0)
    # The server keeps the last 512-1024 masked steps: after fewer, earlier levels' steps remain.
    window = (
        "this level only" if steps >= 1024 else "this level and the warm-up" if first else "this level and earlier ones"
    )
    return {**after, "steps_in_level": steps, "window": window}


async def measure(name: str, target: Target, args: argparse.Namespace) -> dict[str, Any]:
    """Warm up, then per concurrency, highest first: constrained, the mask times, then free twins.

    Why highest first: the lowest level runs the most steps, so it then fills the server's window
    of mask times by itself, and the highest level's window holds nothing but its own and the
    warm-up's few steps.
    """
    cases = list(range(args.cases))
    # Warm-up: load lazily allocated state, compile every schema once (a server that caches
    # compiled grammars then serves repeated schemas, as an application sends them) and let both
    # modes find the prompts' prefixes cached alike; 2 tokens each, so it adds few mask samples.
    warm = [Job(c, True, 2) for c in cases] + [Job(c, False, 2, forced=True) for c in cases]
    await asyncio.wait_for(closed_loop(target, warm, 16), timeout=args.level_budget)
    levels: dict[str, Any] = {}
    for c in sorted(args.concurrency, reverse=True):
        jobs = jobs_for(cases, c, args.rounds, args.max_tokens)
        constrained = await run_level(target, jobs, c, args, masks="later" if levels else "first")
        levels[str(c)] = {"constrained": constrained}
        if constrained.get("timed_out"):
            _log(f"  {name} C={c}: constrained timed out; skipping the rest")
            break
        free = await run_level(target, free_twins(constrained["_answers"], args), c, args)
        levels[str(c)]["free"] = free
        if free.get("timed_out"):
            _log(f"  {name} C={c}: free timed out; skipping the rest")
            break
        _log(
            f"  {name} C={c}: constrained {constrained['tokens_per_s']:.1f} tok/s "
            f"(valid {constrained['valid']}/{constrained['requests']}), free {free['tokens_per_s']:.1f} tok/s, "
            f"ratio {_ratio(constrained['tokens_per_s'], free['tokens_per_s']) or 0:.2f}; other processes "
            f"{constrained['others_cpu']:.0%} / {free['others_cpu']:.0%} of the CPUs"
        )
    return levels


def sampling_defaults(base_url: str) -> Any:
    """What the server applies when a request leaves sampling unset (streamchat reports it)."""
    try:
        data = httpx.get(base_url + "/v1/models", timeout=10).json().get("data") or [{}]
    except (httpx.HTTPError, ValueError):
        return None
    return data[0].get("sampling_defaults")


def run_server(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Start, measure and stop one server; one that cannot start is reported as skipped."""
    peer = PEERS[name]
    busy = wait_for_idle(args.max_busy, args.idle_wait) if args.idle_wait > 0 else busy_fraction()
    _log(f"{name}: starting (CPUs {busy:.0%} busy before start)")
    try:
        with running(peer) as target:
            _log(f"{name}: ready at {target.base_url}")
            levels = asyncio.run(measure(name, target, args))
            return {
                "note": peer.note,
                "busy_before": busy,
                "sampling_defaults": sampling_defaults(target.base_url),
                "levels": levels,
            }
    except Unavailable as exc:
        _log(f"{name}: SKIPPED: {exc}")
        return {"note": peer.note, "skipped": str(exc), "levels": {}}
    except TimeoutError:
        _log(f"{name}: SKIPPED: warm-up did not finish within {args.level_budget:.0f} s")
        return {"note": peer.note, "skipped": "warm-up timed out", "levels": {}}


# -- report ------------------------------------------------------------------------------------------


def _level(run: dict[str, Any], server: str, c: int, mode: str) -> dict[str, Any]:
    return run["servers"].get(server, {}).get("levels", {}).get(str(c), {}).get(mode, {})


def _tps(run: dict[str, Any], server: str, c: int, mode: str) -> float | None:
    level = _level(run, server, c, mode)
    return None if not level or level.get("timed_out") else level["tokens_per_s"]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _verdict(value: float | None, target: float | None) -> str:
    if value is None:
        return "not measured"
    if target is None:
        return f"{value:.2f}×"
    return f"**{value:.2f}×** {'holds' if value >= target else 'MISSED'} (target ≥ {target}×)"


def summary(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The ratios the targets are about: per server and concurrency, constrained/free and ÷ llama-server."""
    rows = []
    for server in run["servers"]:
        for c in run["concurrency"]:
            con, free = _tps(run, server, c, "constrained"), _tps(run, server, c, "free")
            peer = _tps(run, BASELINE, c, "constrained") if server != BASELINE else None
            rows.append(
                {"server": server, "concurrency": c, "constrained": con, "free": free,
                 "vs_free": _ratio(con, free), "vs_llama_server": _ratio(con, peer)}
            )  # fmt: skip
    return rows


def _summary_rows(run: dict[str, Any]) -> list[str]:
    lines = []
    for row in run["summary"]:
        if row["constrained"] is None:
            continue
        c, ours = row["concurrency"], row["server"] != BASELINE
        vs_free = _verdict(row["vs_free"], TARGET_VS_FREE if ours else None)
        vs_peer = _verdict(row["vs_llama_server"], TARGET_VS_LLAMA if c >= 16 else None) if ours else "—"
        free = "—" if row["free"] is None else f"{row['free']:.1f}"
        lines.append(f"| {row['server']} | {c} | {row['constrained']:.1f} | {free} | {vs_free} | {vs_peer} |")
    return lines


def _level_rows(run: dict[str, Any]) -> list[str]:
    rows = []
    for server in run["servers"]:
        for c in run["concurrency"]:
            for mode in ("constrained", "free"):
                lv = _level(run, server, c, mode)
                if not lv:
                    continue
                if lv.get("timed_out"):
                    rows.append(f"| {server} | {c} | {mode} | timed out after {lv['wall_s']:.0f} s |||||||||")
                    continue
                valid = f"{lv['valid']}/{lv['requests']}" if "valid" in lv else "—"
                cut = "forced" if "forced_exact" in lv else lv["finish_length"]
                noisy = " ⚠" if lv["others_cpu"] > NOISY else ""
                rows.append(
                    f"| {server} | {c} | {mode} | {lv['requests']} | {lv['tokens'] / max(1, lv['requests']):.1f} "
                    f"| {lv['tokens_per_s']:.1f} | {_ms(lv['ttft_p50'])} | {_ms(lv['ttft_p99'])} "
                    f"| {_ms(lv['itl_p50'])} | {valid} | {cut} | {lv['others_cpu']:.0%}{noisy} |"
                )
    return rows


def _mask_rows(run: dict[str, Any]) -> list[str]:
    rows = []
    for server in run["servers"]:
        for c in run["concurrency"]:
            mask = _level(run, server, c, "constrained").get("mask")
            if not mask:
                continue
            rows.append(
                f"| {server} | {c} | {mask.get('mask_p50', 0) * 1e6:.0f} | {mask.get('mask_p90', 0) * 1e6:.0f} "
                f"| {mask.get('mask_p99', 0) * 1e6:.0f} | {mask['steps_in_level']:.0f} ({mask['window']}) |"
            )
    return rows


def _notes(run: dict[str, Any]) -> list[str]:
    notes = []
    for server, result in run["servers"].items():
        if result.get("skipped"):
            lines = result["skipped"].splitlines()
            notes.append(f"- **{server} skipped**: {' … '.join(dict.fromkeys(lines[:1] + lines[-1:]))}")
        for c in run["concurrency"]:
            for mode in ("constrained", "free"):
                lv = _level(run, server, c, mode)
                if lv.get("refused"):
                    notes.append(f"- {server} C={c}: schemas refused (HTTP 4xx): cases {lv['refused']}")
                if lv.get("invalid"):
                    shown = "; ".join(f"case {k}: {v}" for k, v in lv["invalid"].items())
                    notes.append(f"- {server} C={c} {mode}: failing answers: {shown}")
                other = [e for e in lv.get("errors", []) if "HTTP 4" not in e]
                if other:
                    notes.append(f"- {server} C={c} {mode}: {len(other)} errors, first: {other[0]}")
                if "forced_exact" in lv and lv["forced_exact"] != lv["requests"]:
                    notes.append(f"- {server} C={c} free: {lv['forced_exact']}/{lv['requests']} had the forced length")
                if lv.get("attempts", 1) > 1:
                    notes.append(f"- {server} C={c} {mode}: measured {lv['attempts']} times (others took the CPUs)")
                if lv.get("others_cpu", 0) > NOISY:
                    notes.append(
                        f"- ⚠ {server} C={c} {mode}: other processes kept {lv['others_cpu']:.0%} of the CPUs busy "
                        "during the level: its figures are not clean"
                    )
    return notes


def markdown(run: dict[str, Any]) -> str:
    """The run as markdown: context, the target ratios, the mask times, then every level."""
    m, args = run["machine"], run["args"]
    free = (
        "each free request forced to exactly the length of its constrained twin"
        if args["free"] == "matched"
        else f"free answers end at EOS or {args['max_tokens']} tokens"
    )
    lines = [
        f"## Structured outputs, run of {run['started']}",
        "",
        f"- Machine: {m['nproc']} cores ({m['cpu']}), {m['memory']} memory; Python {m['python']}, "
        f"torch {m['torch']}, llama-cpp-python {m['llama-cpp-python']}; commit {m['commit']}",
        f"- Command: `{run['command']}`",
        f'- {args["cases"]} (prompt, schema) cases of `bench/json_schemas.py`, prompt + " Answer in JSON.", '
        f"greedy with no repetition penalty on every server (streamchat's model default of 1.15 off), "
        f"at most {args['max_tokens']} tokens, {args['rounds']} pass(es) over the cases per level "
        f"(at least C requests), C clients in a closed loop; {free}.",
        *(
            f"- {n}: {r['note']}; CPUs {r['busy_before']:.0%} busy before start"
            + (f"; sampling defaults {json.dumps(r['sampling_defaults'])}" if r.get("sampling_defaults") else "")
            for n, r in run["servers"].items()
            if not r.get("skipped")
        ),
        "",
        f"| server | C | constrained tokens/s | free tokens/s | constrained / free | ÷ {BASELINE} constrained |",
        "|---|---|---|---|---|---|",
        *_summary_rows(run),
    ]
    masks = _mask_rows(run)
    if masks:
        lines += [
            "",
            "streamchat's grammar mask time per engine step (all constrained rows of the step), from "
            "`/metrics` right after each constrained level, in µs:",
            "",
            "| server | C | p50 | p90 | p99 | engine steps in the level (window: last 512–1024 steps) |",
            "|---|---|---|---|---|---|",
            *masks,
        ]
    lines += [
        "",
        "tokens/s = generated tokens of the level / its wall time. TTFT and ITL in ms. valid = answers that "
        "parse and validate (`jsonschema`, formats checked). length = answers cut at max_tokens. "
        f"other CPU = share of the CPUs other processes used during the level (⚠ above {NOISY:.0%}).",
        "",
        "| server | C | answers | requests | tokens/request | tokens/s | TTFT p50 | TTFT p99 | ITL p50 "
        "| valid | length | other CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *_level_rows(run),
    ]
    notes = _notes(run)
    return "\n".join(lines + (["", "Notes:", *notes] if notes else [])) + "\n"


def _strip(value: Any) -> Any:
    """The run without the raw answers (kept in memory only for validation and twin lengths)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k != "_answers"}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.structured",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--servers", default=",".join(SERVERS), help=f"comma list from: {', '.join(OPENAI_PEERS)}")
    parser.add_argument("--concurrency", default="1,16", help="comma list of concurrent clients")
    parser.add_argument("--cases", type=int, default=len(CASES), help="use the first N cases")
    parser.add_argument("--rounds", type=int, default=3, help="passes over the cases per level")
    parser.add_argument("--max-tokens", type=int, default=256, help="max_tokens of every request")
    parser.add_argument(
        "--free",
        choices=("matched", "natural"),
        default="matched",
        help="free answers forced to their constrained twin's length, or ending on their own",
    )
    parser.add_argument("--level-budget", type=float, default=600.0, help="seconds one level may take")
    parser.add_argument("--retries", type=int, default=3, help="re-measurements of a level others disturbed")
    parser.add_argument("--max-busy", type=float, default=0.15, help="CPU share counted as idle")
    parser.add_argument("--idle-wait", type=float, default=600.0, help="seconds to wait for idle per server")
    parser.add_argument("--quick", action="store_true", help="16 cases, 1 round, --max-tokens 128, --idle-wait 60")
    parser.add_argument("--out", type=Path, default=RESULTS / "structured", help="writes OUT.md and OUT.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.cases, args.rounds, args.max_tokens = min(args.cases, 16), 1, min(args.max_tokens, 128)
        args.idle_wait = min(args.idle_wait, 60.0)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    unknown = [s for s in args.servers if s not in PEERS or PEERS[s].protocol != "openai"]
    if unknown:
        parser.error(f"unknown server(s) {unknown}; known: {', '.join(OPENAI_PEERS)}")
    if not 1 <= args.cases <= len(CASES):
        parser.error(f"--cases must be 1 to {len(CASES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _stop_on_signals()
    args = parse_args(argv)
    run: dict[str, Any] = {
        "started": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "command": shlex.join(["python", "-m", "bench.structured", *argv]),
        "machine": machine(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "concurrency": args.concurrency,
        "servers": {},
    }
    for name in args.servers:
        run["servers"][name] = run_server(name, args)
    run = _strip(run)
    run["summary"] = summary(run)
    text = markdown(run)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text, encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(run, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
