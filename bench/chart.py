"""One run of `bench.run` drawn as an SVG: people compare servers by looking.

Three panels: aggregate tokens/s against concurrency (one line per server), time to first token
p50 (solid) and p99 (dashed) against concurrency on a log scale, and resident memory as bars
(after start, and the peak under any level). Plain SVG, no plotting library.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
W, H = 330, 270  # one panel
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 50, 40


def svg(run: dict[str, Any]) -> str:
    servers = {n: r for n, r in run["servers"].items() if r.get("levels")}
    colours = {name: COLOURS[i % len(COLOURS)] for i, name in enumerate(servers)}
    levels = sorted({lv["concurrency"] for r in servers.values() for lv in r["levels"]})
    parts = [
        _panel(0, "tokens/s", levels, servers, colours, "tokens_per_s", log=False),
        _panel(1, "TTFT ms (p50 solid, p99 dashed)", levels, servers, colours, "ttft", log=True),
        _rss_panel(2, servers, colours),
    ]
    width = 3 * W
    legend, lx, ly = [], LEFT, H + 8
    for name, colour in colours.items():
        if lx + 24 + 7 * len(name) > width:  # next row
            lx, ly = LEFT, ly + 18
        legend.append(f'<rect x="{lx}" y="{ly}" width="12" height="12" fill="{colour}"/>')
        legend.append(f'<text x="{lx + 16}" y="{ly + 10}">{escape(name)}</text>')
        lx += 40 + 7 * len(name)
    m = run["machine"]
    title = escape(f"bench.run of {run.get('started', '')}: {m.get('cpu', '')}, {m.get('nproc')} cores")
    height = ly + 24
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">'
        f'<rect width="{width}" height="{height}" fill="white"/>'
        f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13">{title}</text>'
        + "".join(parts + legend)
        + "</svg>\n"
    )


def _frame(index: int, title: str) -> tuple[float, float, float, float, list[str]]:
    """The panel's plot area (x0, y0, x1, y1) and its title."""
    x0, x1 = index * W + LEFT, (index + 1) * W - RIGHT
    y0, y1 = H - BOTTOM, TOP
    out = [
        f'<text x="{(x0 + x1) / 2}" y="{y1 - 8}" text-anchor="middle" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="black"/>',
        f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="black"/>',
    ]
    return x0, y0, x1, y1, out


def _ticks(top: float, log: bool) -> list[float]:
    if log:
        return [10.0**k for k in range(0, math.ceil(math.log10(max(top, 10))) + 1)]
    step = 10 ** math.floor(math.log10(max(top, 1)))
    step = step * 2 if top / step > 5 else step
    return [step * k for k in range(int(top // step) + 2)]


def _panel(
    index: int,
    title: str,
    levels: list[int],
    servers: dict[str, Any],
    colours: dict[str, str],
    key: str,
    log: bool,
) -> str:
    x0, y0, x1, y1, out = _frame(index, title)
    series = []  # (server, dashed, [(level index, value)])
    for name, result in servers.items():
        points = {lv["concurrency"]: lv for lv in result["levels"] if not lv.get("timed_out")}
        for k, dashed in ((key, False),) if key != "ttft" else (("ttft_p50", False), ("ttft_p99", True)):
            scale = 1000 if key == "ttft" else 1
            values = [(levels.index(c), lv[k] * scale) for c, lv in sorted(points.items()) if lv.get(k)]
            series.append((name, dashed, values))
    top = max((v for _, _, vals in series for _, v in vals), default=1.0)
    ticks = _ticks(top, log)
    top = ticks[-1]
    bottom = ticks[0] if log else 0.0

    def y(v: float) -> float:
        if log:
            v = max(v, bottom)
            return y0 - (math.log10(v) - math.log10(bottom)) / (math.log10(top) - math.log10(bottom)) * (y0 - y1)
        return y0 - v / top * (y0 - y1)

    def x(i: int) -> float:
        return x0 + (i + 0.5) * (x1 - x0) / max(len(levels), 1)

    for t in ticks:
        out.append(f'<line x1="{x0}" y1="{y(t):.1f}" x2="{x1}" y2="{y(t):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 - 4}" y="{y(t) + 4:.1f}" text-anchor="end">{t:g}</text>')
    for i, c in enumerate(levels):
        out.append(f'<text x="{x(i):.1f}" y="{y0 + 14}" text-anchor="middle">{c}</text>')
    out.append(f'<text x="{(x0 + x1) / 2}" y="{y0 + 28}" text-anchor="middle">concurrent streams</text>')
    for name, dashed, values in series:
        if not values:
            continue
        path = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in values)
        dash = ' stroke-dasharray="5,3"' if dashed else ""
        out.append(f'<polyline points="{path}" fill="none" stroke="{colours[name]}" stroke-width="2"{dash}/>')
        out += [f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" fill="{colours[name]}"/>' for i, v in values]
    return "".join(out)


def _rss_panel(index: int, servers: dict[str, Any], colours: dict[str, str]) -> str:
    x0, y0, x1, y1, out = _frame(index, "RSS MiB (light: after start, dark: peak)")
    bars = []
    for name, result in servers.items():
        peaks = [lv.get("rss_peak_mb") or 0 for kind in ("levels", "long", "edit") for lv in result.get(kind, [])]
        bars.append((name, result.get("rss_idle_mb") or 0, max(peaks, default=0)))
    top = _ticks(max((max(i, p) for _, i, p in bars), default=1.0), log=False)
    scale = (y0 - y1) / top[-1]
    for t in top:
        out.append(f'<line x1="{x0}" y1="{y0 - t * scale:.1f}" x2="{x1}" y2="{y0 - t * scale:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 - 4}" y="{y0 - t * scale + 4:.1f}" text-anchor="end">{t:g}</text>')
    slot = (x1 - x0) / max(len(bars), 1)
    for i, (name, idle, peak) in enumerate(bars):
        bx = x0 + i * slot + slot * 0.15
        bw = slot * 0.35
        for j, (value, opacity) in enumerate(((idle, 0.45), (peak, 1.0))):
            out.append(
                f'<rect x="{bx + j * bw:.1f}" y="{y0 - value * scale:.1f}" width="{bw:.1f}" '
                f'height="{value * scale:.1f}" fill="{colours[name]}" fill-opacity="{opacity}"/>'
            )
        out.append(f'<text x="{bx + bw:.1f}" y="{y0 - peak * scale - 3:.1f}" text-anchor="middle">{peak:.0f}</text>')
    return "".join(out)
