"""Markdown and JSON for one benchmark run: machine, command, and per-server figures."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

BASELINES = {"seed": "× seed", "transformers-serve": "× tf serve", "llama-server": "× llama-server"}
COLUMNS = ["server", "C", "tokens/s", "TTFT p50", "TTFT p99", "ITL p50", "ITL p99", "exact length", "RSS peak MiB"]


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
                rows.append(f"| {name} | {c} | timed out after {lv['wall_s']:.0f} s |" + " |" * (len(COLUMNS) + 1))
                continue
            ratios = " | ".join(_ratio(tps, bases[b].get(c)) for b in BASELINES)
            rows.append(
                f"| {name} | {c} | {tps:.1f} | {_ms(lv['ttft_p50'])} | {_ms(lv['ttft_p99'])} "
                f"| {_ms(lv['itl_p50'])} | {_ms(lv['itl_p99'])} | {lv['exact']}/{lv['requests']} "
                f"| {_mib(lv.get('rss_peak_mb'))} | {ratios} |"
            )
    return rows


def _mib(value: float | None) -> str:
    return "—" if not value else f"{value:.0f}"


def _by_concurrency(servers: dict[str, Any], name: str, kind: str) -> dict[int, dict[str, Any]]:
    levels = servers.get(name, {}).get(kind, [])
    return {lv["concurrency"]: lv for lv in levels if not lv.get("timed_out")}


def _long_rows(servers: dict[str, Any]) -> list[str]:
    """Long prompts: time to first token and prefill rate, each against llama-server's."""
    base = _by_concurrency(servers, "llama-server", "long")
    rows = []
    for name, result in servers.items():
        for lv in result.get("long", []):
            c = lv["concurrency"]
            if lv.get("timed_out"):
                rows.append(f"| {name} | {c} | timed out after {lv['wall_s']:.0f} s | | | | | | |")
                continue
            prompts = [n for n in lv["prompt_tokens"] if n]
            mean = f"{sum(prompts) / len(prompts):.0f}" if prompts else "—"
            ref = base.get(c, {})
            ratios = [_ratio(lv[k] or 0, ref.get(k)) for k in ("ttft_p50", "ttft_p99")]
            rate = lv["prefill_tokens_per_s"]
            rows.append(
                f"| {name} | {c} | {mean} | {_ms(lv['ttft_p50'])} | {_ms(lv['ttft_p99'])} | {' | '.join(ratios)} "
                f"| {'—' if rate is None else f'{rate:.0f}'} | {_mib(lv.get('rss_peak_mb'))} |"
            )
    return rows


def _edit_rows(servers: dict[str, Any]) -> list[str]:
    """Edit answers: tokens/s against llama-server's, and how many drafts were kept."""
    base = _by_concurrency(servers, "llama-server", "edit")
    rows = []
    for name, result in servers.items():
        for lv in result.get("edit", []):
            c = lv["concurrency"]
            if lv.get("timed_out"):
                rows.append(f"| {name} | {c} | timed out after {lv['wall_s']:.0f} s | | | | | | | |")
                continue
            kept = f"{lv['accepted']:.0f} / {lv['drafted']:.0f}" if lv.get("drafted") else "—"
            ratio = _ratio(lv["tokens_per_s"], base.get(c, {}).get("tokens_per_s"))
            decode = lv.get("decode_tokens_per_s")
            decode_ratio = _ratio(decode, base.get(c, {}).get("decode_tokens_per_s"))
            rows.append(
                f"| {name} | {c} | {lv['tokens_per_s']:.1f} | {ratio} | {'—' if decode is None else f'{decode:.1f}'} "
                f"| {decode_ratio} | {_ms(lv['ttft_p50'])} | {lv['tokens']} | {kept} | {_mib(lv.get('rss_peak_mb'))} |"
            )
    return rows


def _same_answers(servers: dict[str, Any]) -> list[str]:
    """Whether servers that should answer alike (streamchat with and without drafts) did."""
    pairs = [("streamchat", "streamchat-nospec")]
    lines = []
    for a, b in pairs:
        ea, eb = _by_concurrency(servers, a, "edit"), _by_concurrency(servers, b, "edit")
        for c in sorted(set(ea) & set(eb)):
            same = ea[c]["texts"] == eb[c]["texts"]
            lines.append(f"- Edit answers of {a} and {b} at C={c}: {'identical' if same else 'DIFFERENT'}.")
    return lines


BUSY_NOTE = 0.05  # other processes' share of the CPUs during a level worth a note


def _notes(servers: dict[str, Any], tokens: int) -> list[str]:
    notes = []
    for name, result in servers.items():
        if result.get("skipped"):
            lines = result["skipped"].splitlines()
            notes.append(f"- **{name} skipped**: {' … '.join(dict.fromkeys(lines[:1] + lines[-1:]))}")
        for kind in ("levels", "long", "edit"):
            for lv in result.get(kind, []):
                if lv.get("others_busy", 0) > BUSY_NOTE:
                    where = "" if kind == "levels" else f" ({'long prompts' if kind == 'long' else 'edit'})"
                    notes.append(
                        f"- {name} C={lv['concurrency']}{where}: other processes used {lv['others_busy']:.0%} "
                        "of the CPUs meanwhile; its figures are low"
                    )
        for lv in result.get("levels", []):
            if lv.get("wrong_lengths"):
                notes.append(f"- {name} C={lv['concurrency']}: lengths ≠ {tokens}: {lv['wrong_lengths']}")
            if lv.get("errors"):
                notes.append(f"- {name} C={lv['concurrency']}: {len(lv['errors'])} errors, first: {lv['errors'][0]}")
    return notes


def markdown(run: dict[str, Any], chart: str | None = None) -> str:
    """The run as markdown: context first, then one row per server and concurrency; the long-prompt
    and edit levels and the chart (`chart`: its file name, beside the markdown) when there are any."""
    m, servers, tokens = run["machine"], run["servers"], run["tokens"]
    ran = {n: r for n, r in servers.items() if not r.get("skipped")}
    lines = [
        f"## Run of {run['started']}",
        "",
        f"- Machine: {m['nproc']} cores ({m['cpu']}), {m['memory']} memory; Python {m['python']}, "
        f"torch {m['torch']}, transformers {m['transformers']}, llama-cpp-python {m['llama-cpp-python']}; "
        f"commit {m['commit']}",
        f"- Command: `{run['command']}`",
        f"- Each request: one user prompt, plain greedy (no repetition penalty), exactly {tokens} generated "
        "tokens forced per server; "
        f"{run['waves']} wave(s) per level, all C streams started together"
        + (
            "; all servers up at once, taking turns wave by wave (long-prompt and edit levels: level by level)."
            if run.get("side_by_side")
            else "; one server after another."
        ),
        f"- Servers included: {', '.join(ran) or 'none'}",
        *(
            f"  - {n}: {r['note']}; CPU {r['busy_before']:.0%} busy before start; "
            f"RSS after start {_mib(r.get('rss_idle_mb'))} MiB"
            for n, r in ran.items()
        ),  # fmt: skip
        "",
        "Aggregate output tokens/s = all generated tokens / wall time of the wave. TTFT and ITL in ms "
        "(ITL = gaps between content chunks as they arrive). Ratios are tokens/s against the same C.",
        "",
        "| " + " | ".join(COLUMNS + list(BASELINES.values())) + " |",
        "|" + "---|" * (len(COLUMNS) + len(BASELINES)),
        *_rows(servers),
    ]
    long, edit = _long_rows(servers), _edit_rows(servers)
    if long:
        lines += [
            "",
            f"Long prompts (≈1,500 tokens, each new to the server, {run['long']['tokens']} tokens out): TTFT in ms "
            "and against llama-server's; prefill tokens/s = prompt tokens of a wave / its last TTFT.",
            "",
            "| server | C | prompt tokens | TTFT p50 | TTFT p99 | × llama-server p50 | × llama-server p99 "
            "| prefill tokens/s | RSS peak MiB |",
            "|---|---|---|---|---|---|---|---|---|",
            *long,
        ]
    if edit:
        lines += [
            "",
            f"Edit answers ({run['edit']['prompts']} prompts whose answers copy much of them, plain greedy, no "
            f"repetition penalty, at most {run['edit']['tokens']} tokens): drafts kept = accepted / proposed by "
            "prompt lookup (streamchat's /metrics). tokens/s counts each answer from its request; decode "
            "tokens/s from its first token (what drafting changes; prefill is the same with or without it).",
            "",
            "| server | C | tokens/s | × llama-server | decode tokens/s | × llama-server | TTFT p50 | tokens "
            "| drafts kept | RSS peak MiB |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *edit,
            *([""] + _same_answers(servers) if _same_answers(servers) else []),
        ]
    if chart:
        lines += ["", f"![tokens/s, TTFT and RSS per server]({chart})"]
    notes = _notes(servers, tokens)
    return "\n".join(lines + (["", "Notes:", *notes] if notes else [])) + "\n"
