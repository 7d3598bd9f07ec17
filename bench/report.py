"""Markdown and JSON for one benchmark run: machine, command, and per-server figures."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

BASELINES = {"seed": "× seed", "transformers-serve": "× tf serve"}
COLUMNS = ["server", "C", "tokens/s", "TTFT p50", "TTFT p99", "ITL p50", "ITL p99", "exact length"]


def _first(path: str, key: str) -> str:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return "?"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(key)), "?")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def machine() -> dict[str, str]:
    """What the figures depend on: cores, CPU, memory, and the versions of the stacks measured."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": _first("/proc/cpuinfo", "model name"),
        "memory": f"{int(_first('/proc/meminfo', 'MemTotal').split()[0]) / 2**20:.1f} GiB",
        "python": platform.python_version(),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "llama-cpp-python": _version("llama-cpp-python"),
        "commit": commit.stdout.strip() or "none",
    }


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:.0f}"


def _ratio(value: float, base: float | None) -> str:
    return f"{value / base:.2f}" if base else "—"


def _throughputs(servers: dict[str, Any], name: str) -> dict[int, float]:
    levels = servers.get(name, {}).get("levels", [])
    return {lv["concurrency"]: lv["tokens_per_s"] for lv in levels if not lv.get("timed_out")}


def _rows(servers: dict[str, Any]) -> list[str]:
    bases = {b: _throughputs(servers, b) for b in BASELINES}
    rows = []
    for name, result in servers.items():
        for lv in result.get("levels", []):
            c, tps = lv["concurrency"], lv["tokens_per_s"]
            if lv.get("timed_out"):
                rows.append(f"| {name} | {c} | timed out after {lv['wall_s']:.0f} s | | | | | | | |")
                continue
            ratios = " | ".join(_ratio(tps, bases[b].get(c)) for b in BASELINES)
            rows.append(
                f"| {name} | {c} | {tps:.1f} | {_ms(lv['ttft_p50'])} | {_ms(lv['ttft_p99'])} "
                f"| {_ms(lv['itl_p50'])} | {_ms(lv['itl_p99'])} | {lv['exact']}/{lv['requests']} | {ratios} |"
            )
    return rows


def _notes(servers: dict[str, Any], tokens: int) -> list[str]:
    notes = []
    for name, result in servers.items():
        if result.get("skipped"):
            lines = result["skipped"].splitlines()
            notes.append(f"- **{name} skipped**: {' … '.join(dict.fromkeys(lines[:1] + lines[-1:]))}")
        for lv in result.get("levels", []):
            if lv.get("wrong_lengths"):
                notes.append(f"- {name} C={lv['concurrency']}: lengths ≠ {tokens}: {lv['wrong_lengths']}")
            if lv.get("errors"):
                notes.append(f"- {name} C={lv['concurrency']}: {len(lv['errors'])} errors, first: {lv['errors'][0]}")
    return notes


def markdown(run: dict[str, Any]) -> str:
    """The run as markdown: context first, then one row per server and concurrency."""
    m, servers, tokens = run["machine"], run["servers"], run["tokens"]
    ran = {n: r for n, r in servers.items() if not r.get("skipped")}
    lines = [
        f"## Run of {run['started']}",
        "",
        f"- Machine: {m['nproc']} cores ({m['cpu']}), {m['memory']} memory; Python {m['python']}, "
        f"torch {m['torch']}, transformers {m['transformers']}, llama-cpp-python {m['llama-cpp-python']}; "
        f"commit {m['commit']}",
        f"- Command: `{run['command']}`",
        f"- Each request: one user prompt, greedy, exactly {tokens} generated tokens forced per server; "
        f"{run['waves']} wave(s) per level, all C streams started together.",
        f"- Servers included: {', '.join(ran) or 'none'}",
        *(f"  - {n}: {r['note']}; CPU {r['busy_before']:.0%} busy before start" for n, r in ran.items()),
        "",
        "Aggregate output tokens/s = all generated tokens / wall time of the wave. TTFT and ITL in ms "
        "(ITL = gaps between content chunks as they arrive). Ratios are tokens/s against the same C.",
        "",
        "| " + " | ".join(COLUMNS + list(BASELINES.values())) + " |",
        "|" + "---|" * (len(COLUMNS) + len(BASELINES)),
        *_rows(servers),
    ]
    notes = _notes(servers, tokens)
    return "\n".join(lines + (["", "Notes:", *notes] if notes else [])) + "\n"
