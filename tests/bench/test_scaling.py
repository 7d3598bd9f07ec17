"""`bench.scaling`'s Redis accounting and its verdicts on the targets, without running any server."""

from __future__ import annotations

import argparse

from bench.redis_store import command_delta, cost, from_info
from bench.scaling import markdown, summary
from redis._parsers.helpers import parse_info

INFO = """# Memory
used_memory:{memory}
# Stats
total_net_input_bytes:{net_in}
total_net_output_bytes:{net_out}
# CPU
used_cpu_sys:{cpu}
used_cpu_user:0.500000
# Commandstats
cmdstat_evalsha:calls={scripts},usec=900,usec_per_call=9.00,rejected_calls=0,failed_calls=0
cmdstat_xadd:calls={scripts},usec=90,usec_per_call=0.90,rejected_calls=0,failed_calls=0
cmdstat_xread:calls={reads},usec=80,usec_per_call=0.80,rejected_calls=0,failed_calls=0
cmdstat_info:calls={infos},usec=80,usec_per_call=40.00,rejected_calls=0,failed_calls=0
"""


def info(memory: int, scripts: int, reads: int, infos: int, cpu: float, net: int) -> dict:
    return parse_info(
        INFO.format(memory=memory, scripts=scripts, reads=reads, infos=infos, cpu=cpu, net_in=net, net_out=2 * net)
    )


def test_the_cost_of_a_wave_counts_the_log_s_commands_and_not_the_harness_s() -> None:
    before = from_info(info(1_000_000, 10, 5, 3, 0.25, 1_000), {"old"})
    after = from_info(info(1_064_000, 110, 105, 9, 0.35, 101_000), {"old", "a", "b"})
    assert command_delta(before, after) == {"evalsha": 100, "xadd": 100, "xread": 100}  # INFO is ours
    keys = {"bytes": {"events": 40_000, "meta": 2_000, "tokens": 400, "lease": 0}, "events": 110}
    figures = cost(before, after, keys, tokens=100)
    assert figures["streams"] == 2
    assert figures["used_memory_per_token"] == 640
    assert figures["commands_per_token"] == 3.0 and figures["scripts_per_token"] == 1.0
    assert figures["xread_per_token"] == 1.0
    assert round(figures["cpu_us_per_token"]) == 1000  # 0.1 s of Redis CPU over 100 tokens
    assert figures["key_bytes_per_stream"] == 21_200
    assert round(figures["key_bytes_per_event"], 1) == 363.6
    assert figures["net_in_per_token"] == 1_000 and figures["net_out_per_token"] == 2_000


def level(tps: float, ttft: float, itl: float, wall: float = 10.0) -> dict:
    return {
        "tokens_per_s": tps, "tokens": int(tps * wall), "wall_s": wall, "ttft_p50": ttft, "ttft_p99": 2 * ttft,
        "itl_p50": itl, "itl_p99": 2 * itl, "exact": 16, "requests": 16, "waves": 3, "rss_peak_mb": 500.0,
        "others_busy": 0.02, "others_by_attempt": [0.02], "errors": [], "wrong_lengths": [], "redis": None,
    }  # fmt: skip


def test_each_target_holds_or_is_missed_and_the_report_says_which() -> None:
    args = argparse.Namespace(store_levels=[16], ray_levels=[16])
    run = {
        "started": "2026-11-30 22:30 UTC", "command": "python -m bench.scaling", "takeover": [],
        "machine": {"nproc": "2", "cpu": "AMD EPYC", "memory": "23.5 GiB", "python": "3.11",
                    "llama-cpp-python": "0.3", "commit": "abc"},
        "versions": {"ray": "2.60.0", "redis-server": "7.0.15"},
        "args": {"tokens": 64, "waves": 3, "level_tokens": 1024, "max_others": 0.1},
        "servers": {
            "streamchat-memory": {"note": "memory", "levels": {"16": [level(300.0, 0.40, 0.045)]}},
            # measured before Ray (alternating with memory) and after it: Ray is compared with both
            "streamchat-redis": {"note": "redis", "levels": {"16": [level(290.0, 0.41, 0.046),
                                                                    level(270.0, 0.43, 0.046)]}},
            "streamchat-ray": {"note": "ray", "levels": {"16": [level(250.0, 0.435, 0.052)]}},
        },
    }  # fmt: skip
    run["summary"] = summary(run, args)
    (store,) = run["summary"]["store"]
    assert round(store["ratio"], 3) == 0.967 and store["holds"]  # 290 / 300: the alternated waves only
    (ray,) = run["summary"]["ray"]
    assert round(ray["ratio"], 3) == 0.893  # 250 / (290 + 270) / 2
    assert ray["holds"] == {"tokens_per_s": False, "ttft_p50": True, "itl_p50": False}
    text = markdown(run)
    assert "Redis log ≥ 0.95× memory tokens/s at C=16: 0.967× — holds" in text
    assert "tokens/s 0.893× (≥ 0.9: **missed**), TTFT p50 +15.0 ms (≤ 20: holds)" in text
    assert "ITL p50 +6.0 ms (≤ 5: **missed**)" in text
    assert "| streamchat-redis (after Ray) | 16 | 270.0 | 430 |" in text
