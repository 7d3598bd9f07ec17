"""`bench.run`'s report and chart from a run's results, without running any server."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from bench.chart import svg
from bench.client import StreamResult, WaveResult, summarise
from bench.report import markdown


def level(c: int, tps: float, ttft: float, rss: float, busy: float = 0.0) -> dict:
    return {
        "concurrency": c, "tokens_per_s": tps, "ttft_p50": ttft, "ttft_p99": 2 * ttft, "itl_p50": 0.01,
        "itl_p99": 0.02, "exact": c, "requests": c, "errors": [], "wrong_lengths": [], "tokens": 64 * c,
        "rss_peak_mb": rss, "others_busy": busy, "prompt_tokens": [1500] * c, "prefill_tokens_per_s": 270.0,
        "texts": ["same"] * c,
    }  # fmt: skip


def server(note: str, tps: float, busy: float = 0.0) -> dict:
    return {
        "note": note, "busy_before": 0.01, "rss_idle_mb": 440.0,
        "levels": [level(1, tps, 0.02, 460), level(16, 2 * tps, 0.5, 500, busy)],
        "long": [level(1, 0, 5.5, 560), level(4, 0, 14.0, 700)],
        "edit": [{**level(1, tps, 0.3, 600), "drafted": 300.0, "accepted": 200.0, "decode_tokens_per_s": 2 * tps}],
    }  # fmt: skip


RUN = {
    "started": "2026-11-30 21:00", "command": "python -m bench.run", "tokens": 64, "waves": 1,
    "machine": {"nproc": "2", "cpu": "AMD EPYC", "memory": "23.5 GiB", "python": "3.11", "torch": "-",
                "transformers": "-", "llama-cpp-python": "-", "commit": "abc"},
    "long": {"concurrency": [1, 4], "tokens": 8}, "edit": {"concurrency": [1], "tokens": 256, "prompts": 4},
    "servers": {"streamchat": server("streamchat", 120, busy=0.3), "llama-server": server("llama-server", 100),
                "streamchat-nospec": server("streamchat --spec-tokens 0", 90)},
}  # fmt: skip


def test_every_table_has_memory_and_the_ratios_to_llama_server() -> None:
    text = markdown(RUN, "run.svg")
    assert "| streamchat | 1 | 120.0 | 20 | 40 | 10 | 20 | 1/1 | 460 | — | — | 1.20 |" in text
    assert "RSS after start 440 MiB" in text
    assert "| streamchat | 4 | 1500 | 14000 | 28000 | 1.00 | 1.00 | 270 | 700 |" in text  # long prompts
    assert "| streamchat | 1 | 120.0 | 1.20 | 240.0 | 1.20 | 300 | 64 | 200 / 300 | 600 |" in text  # edit answers
    assert "Edit answers of streamchat and streamchat-nospec at C=1: identical." in text
    assert "streamchat C=16: other processes used 30% of the CPUs" in text
    assert "![tokens/s, TTFT and RSS per server](run.svg)" in text


def test_the_chart_is_svg_with_a_line_per_server_and_memory_bars() -> None:
    root = ET.fromstring(svg(RUN))
    ns = "{http://www.w3.org/2000/svg}"
    lines = root.findall(f"{ns}polyline")
    assert len(lines) == 3 * 3  # tokens/s, TTFT p50 and p99 for each server
    assert len(root.findall(f"{ns}rect")) >= 1 + 3 * 2 + 3  # background, two bars and a key per server
    assert any(t.text == "llama-server" for t in root.iter(f"{ns}text"))


def test_decode_rate_counts_from_each_answers_first_token() -> None:
    from_first = [StreamResult(tokens=11, ttft=0.5, seconds=1.5), StreamResult(tokens=21, ttft=1.0, seconds=2.0)]
    assert summarise([WaveResult(2, 2.0, from_first)], 11)["decode_tokens_per_s"] == 30 / 2.0


def test_the_report_says_whether_the_servers_took_turns() -> None:
    assert "; one server after another." in markdown(RUN, "run.svg")
    assert "taking turns wave by wave" in markdown({**RUN, "side_by_side": True}, "run.svg")
