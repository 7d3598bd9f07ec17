"""What scaling out costs: the Redis stream log, a Ray Serve replica, Redis per token, and takeover.

One run, side by side, on the embedded model (default engine), answers forced to `--tokens`
tokens as `bench.run` forces them, against a redis-server of its own (free port, temp folder):

1. *store*: streamchat with the in-memory stream log and streamchat with `--stream-store redis://…`,
   both running, their waves alternating at each level (`--store-levels`), so that a drift of the
   machine hits both alike. Target: Redis ≥ 0.95× memory tokens/s.
2. *ray*: `streamchat serve --replicas 1 --stream-store redis://…` on a local Ray cluster (its own
   temp folder) against the direct server on the same Redis, measured before and after the Ray
   run (A-B-A: the direct figures pool both) at `--ray-levels`. Ray's processes never run while
   the direct server is measured. Targets: ≥ 0.9× tokens/s, TTFT p50 +≤ 20 ms, ITL p50 +≤ 5 ms.
3. *Redis cost*, from the same waves: Redis's counters before and after each wave of a server on
   Redis (`INFO`: used_memory, commandstats, CPU, network) and the exact memory of the streams'
   keys (`MEMORY USAGE`), per generated token, event and stream.
4. *takeover*: server B runs on the Redis; for each trial a server A starts, streams a long greedy
   answer, and is killed with SIGKILL after `--kill-after` tokens; the client at once reconnects to
   B with `Last-Event-ID`. Timed from the kill: the lease's expiry (what `--stream-lease` decides),
   B's claim, and the first token B generates; the answer must equal an uninterrupted one.

Others' CPU share is measured per wave (the server's process tree, Redis and this harness are
ours); a level where it passes `--max-others` is measured again once the CPUs are idle.

    python -m bench.scaling              # the full run (~10 minutes on 2 cores)
    python -m bench.scaling --quick      # every part, tiny: a smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import json
import math
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.client import PROMPTS, Target, WaveResult, _body, stream_once, wave
from bench.client import summarise as summarise_waves
from bench.idle import _cpu_times, busy_fraction, wait_for_idle
from bench.peers import Peer, Unavailable, _streamchat, running
from bench.redis_store import RedisServer, Snapshot, cost, key_bytes, running_redis, snapshot
from bench.report import _ms, _version, machine
from bench.rss import _TICK, PeakRss, _cpu_seconds, _family, rss_mb
from bench.run import _log, _stop_on_signals

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ("store", "ray", "takeover")
STORE_TARGET = 0.95  # Redis log tokens/s at least 0.95x the memory log's, at 16 and 64 streams
RAY_TPS_TARGET = 0.9  # one Ray Serve replica at least 0.9x the direct server's tokens/s, at 1 and 16
RAY_TTFT_MS = 20.0  # ... adding at most 20 ms to TTFT p50
RAY_ITL_MS = 5.0  # ... and at most 5 ms to ITL p50


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma list from: {', '.join(PARTS)}")
    parser.add_argument("--tokens", type=int, default=64, help="generated tokens per request")
    parser.add_argument("--store-levels", default="16,64", help="concurrency levels, memory vs Redis log")
    parser.add_argument("--ray-levels", default="1,16", help="concurrency levels, Ray Serve vs direct")
    parser.add_argument("--waves", type=int, default=3, help="measured waves per server and level, at least")
    parser.add_argument("--level-tokens", type=int, default=1024, help="tokens per server and level, at least")
    parser.add_argument("--leases", default="1,5", help="--stream-lease values of the takeover trials")
    parser.add_argument("--trials", type=int, default=5, help="kill -9 trials per lease")
    parser.add_argument("--takeover-tokens", type=int, default=256, help="length of the answer killed mid-way")
    parser.add_argument("--kill-after", type=int, default=16, help="tokens the client reads before the kill")
    parser.add_argument("--max-busy", type=float, default=0.15, help="CPU share counted as idle")
    parser.add_argument("--idle-wait", type=float, default=120.0, help="seconds to wait for idle CPUs")
    parser.add_argument("--max-others", type=float, default=0.10, help="others' CPU share that voids a level")
    parser.add_argument("--retries", type=int, default=2, help="re-measurements of a level others disturbed")
    parser.add_argument("--quick", action="store_true", help="every part, tiny (a smoke test)")
    parser.add_argument("--out", type=Path, default=RESULTS / "scaling", help="writes OUT.md and OUT.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.tokens, args.waves, args.level_tokens, args.trials = 16, 1, 16, 1
        args.store_levels, args.ray_levels, args.leases = "2", "1,2", "1"
        args.takeover_tokens, args.kill_after, args.idle_wait, args.retries = 48, 4, 5.0, 0
        if args.out == RESULTS / "scaling":
            args.out = RESULTS / "scaling-quick"
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {unknown}; known: {', '.join(PARTS)}")
    args.store_levels, args.ray_levels = _ints(args.store_levels), _ints(args.ray_levels)
    args.leases = _floats(args.leases)
    return args


# ---------------------------------------------------------------- servers


def _server(name: str, *flags: str) -> Peer:
    """streamchat with the default engine and these flags, forced lengths as in bench.run."""
    return _streamchat(name, None, *flags)


@contextlib.contextmanager
def _ray_server(store: RedisServer) -> Iterator[Target]:
    """`streamchat serve --replicas 1` on a local Ray cluster whose folder is ours alone, so that
    whatever of it outlives the command is found and stopped by that folder."""
    folder = tempfile.mkdtemp(prefix="raysc-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    peer = dataclasses.replace(
        _server("streamchat-ray", "--replicas", "1", "--stream-store", store.url),
        env={"RAY_TMPDIR": folder},
        note="streamchat serve --replicas 1 --stream-store redis://… (a local Ray cluster, Ray Serve's proxy)",
    )
    try:
        with running(peer, ready_timeout=600) as target:
            yield target
    finally:
        _stop_leftovers(folder)
        shutil.rmtree(folder, ignore_errors=True)


def _stop_leftovers(folder: str) -> None:
    """SIGKILL, one by one, processes of our Ray cluster that are still there once it was stopped."""
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if any(folder in part for part in proc.info["cmdline"] or ()):
            _log(f"  stopping leftover Ray process {proc.info['pid']}")
            with contextlib.suppress(psutil.Error):
                proc.kill()


# ---------------------------------------------------------------- throughput levels


@dataclasses.dataclass
class Measured:
    """The waves one server got at one level, and what Redis counted during them."""

    waves: list[WaveResult] = dataclasses.field(default_factory=list)
    busy: list[tuple[float, float]] = dataclasses.field(default_factory=list)  # (wall, others' share)
    peak_mb: float = 0.0
    redis: list[tuple[Snapshot, Snapshot, int]] = dataclasses.field(default_factory=list)

    @property
    def others(self) -> float:
        wall = sum(w for w, _ in self.busy)
        return sum(w * b for w, b in self.busy) / wall if wall else 0.0


def _waves_for(concurrency: int, args: argparse.Namespace) -> int:
    """Enough waves for `--level-tokens` per server: one stream's wave is too short to time alone."""
    return max(args.waves, math.ceil(args.level_tokens / (concurrency * args.tokens)))


def _level_once(
    targets: dict[str, Target], on_redis: set[str], concurrency: int, args: argparse.Namespace, store: RedisServer
) -> dict[str, Measured]:
    """The level's waves, each server's in turn (the order turning each round)."""
    measured = {name: Measured() for name in targets}
    names = list(targets)
    client = store.client()
    try:
        for round_ in range(_waves_for(concurrency, args)):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                target, m = targets[name], measured[name]
                before = snapshot(client) if name in on_redis else None
                with PeakRss(target.pid, also=(store.proc.pid,)) as rss:
                    result = asyncio.run(wave(target, concurrency, args.tokens))
                m.waves.append(result)
                m.busy.append((result.wall, rss.others_busy))
                m.peak_mb = max(m.peak_mb, rss.peak)
                if before is not None:
                    m.redis.append((before, snapshot(client), result.tokens))
    finally:
        client.close()
    return measured


def _redis_cost(m: Measured, store: RedisServer) -> dict[str, Any] | None:
    """Redis's counters over a server's waves of one level, summed wave by wave."""
    if not m.redis:
        return None
    first, last = m.redis[0][0], m.redis[-1][1]
    # other servers' waves between these touched no Redis: the level's first and last snapshots
    # differ by exactly these waves plus our own reads, which `cost` leaves out
    new = set().union(*(after.streams - before.streams for before, after, _ in m.redis))
    client = store.client()
    try:
        keys = key_bytes(client, new)
    finally:
        client.close()
    figures = cost(first, last, keys, sum(tokens for _, _, tokens in m.redis))
    figures["clients_most"] = max(after.clients for _, after, _ in m.redis)
    return figures


def measure_level(
    targets: dict[str, Target], on_redis: set[str], concurrency: int, args: argparse.Namespace, store: RedisServer
) -> dict[str, dict[str, Any]]:
    """One level for every server, measured again while others disturbed it (up to `--retries`)."""
    attempts: list[dict[str, float]] = []
    for attempt in range(args.retries + 1):
        measured = _level_once(targets, on_redis, concurrency, args, store)
        attempts.append({name: m.others for name, m in measured.items()})
        worst = max(attempts[-1].values())
        if worst <= args.max_others or attempt == args.retries:
            break
        _log(f"  C={concurrency}: other processes took {worst:.0%} of the CPUs; measuring again once idle")
        wait_for_idle(args.max_busy, args.idle_wait)
    levels = {}
    for name, m in measured.items():
        level = summarise_waves(m.waves, args.tokens)
        level.pop("texts", None)
        level.pop("chunks_per_request", None)
        level.pop("prompt_tokens", None)
        level |= {"others_busy": m.others, "rss_peak_mb": m.peak_mb, "others_by_attempt": [a[name] for a in attempts]}
        level["redis"] = _redis_cost(m, store)
        levels[name] = level
        _log(
            f"  {name} C={concurrency}: {level['tokens_per_s']:.1f} tok/s, TTFT p50 {_ms(level['ttft_p50'])} ms, "
            f"ITL p50 {_ms(level['itl_p50'])} ms, exact {level['exact']}/{level['requests']}, "
            f"others' CPU {m.others:.0%}"
        )
    return levels


def _start(target: Target, name: str) -> dict[str, Any]:
    """A started server's settled memory, after the warm-up wave (first requests pay for lazy setup)."""
    asyncio.run(wave(target, 2, 16))
    time.sleep(1.0)
    idle = rss_mb(target.pid) if target.pid is not None else None
    _log(f"{name}: ready at {target.base_url}, RSS {idle or 0:.0f} MiB (with its children)")
    return {"rss_idle_mb": idle}


def _idle(args: argparse.Namespace) -> float:
    return wait_for_idle(args.max_busy, args.idle_wait) if args.idle_wait > 0 else busy_fraction()


def run_throughput(args: argparse.Namespace, store: RedisServer, servers: dict[str, Any]) -> None:
    """Parts 1-3: memory vs Redis (alternating), then Ray, then the direct Redis server again."""
    redis_flags = ("--stream-store", store.url)
    store_part, ray_part = "store" in args.parts, "ray" in args.parts
    direct_levels = sorted(set(args.store_levels if store_part else []) | set(args.ray_levels if ray_part else []))

    def record(name: str, note: str, info: dict[str, Any], busy: float) -> dict[str, Any]:
        return servers.setdefault(name, {"note": note, "busy_before": busy, **info, "levels": {}})

    with running(_server("streamchat-redis", *redis_flags)) as direct:
        busy = _idle(args)
        direct_info = _start(direct, "streamchat-redis")
        direct_note = "streamchat serve --stream-store redis://… (one process)"
        targets: dict[str, Target] = {"streamchat-redis": direct}
        notes = {"streamchat-redis": direct_note}
        with contextlib.ExitStack() as stack:
            if store_part:
                memory = stack.enter_context(running(_server("streamchat-memory")))
                targets["streamchat-memory"] = memory
                notes["streamchat-memory"] = "streamchat serve (the in-memory stream log)"
                record("streamchat-memory", notes["streamchat-memory"], _start(memory, "streamchat-memory"), busy)
            record("streamchat-redis", direct_note, direct_info, busy)
            for c in direct_levels:
                chosen = {n: t for n, t in targets.items() if n == "streamchat-redis" or c in args.store_levels}
                _log(f"level C={c}: {', '.join(chosen)}")
                for name, level in measure_level(chosen, {"streamchat-redis"}, c, args, store).items():
                    servers[name]["levels"].setdefault(str(c), []).append(level)
        if not ray_part:
            return
        busy = _idle(args)
        _log("streamchat-ray: starting a local Ray cluster and one replica")
        try:
            with _ray_server(store) as ray:
                info = record("streamchat-ray", "streamchat serve --replicas 1 --stream-store redis://…", {}, busy)
                info |= _start(ray, "streamchat-ray")
                for c in args.ray_levels:
                    _log(f"level C={c}: streamchat-ray")
                    level = measure_level({"streamchat-ray": ray}, {"streamchat-ray"}, c, args, store)
                    info["levels"].setdefault(str(c), []).append(level["streamchat-ray"])
        except Unavailable as exc:
            _log(f"streamchat-ray: SKIPPED: {exc}")
            servers["streamchat-ray"] = {"note": "streamchat serve --replicas 1", "skipped": str(exc), "levels": {}}
            return
        _idle(args)
        for c in args.ray_levels:  # A-B-A: the direct server again, with Ray gone
            _log(f"level C={c}: streamchat-redis again, after Ray")
            level = measure_level({"streamchat-redis": direct}, {"streamchat-redis"}, c, args, store)
            servers["streamchat-redis"]["levels"].setdefault(str(c), []).append(level["streamchat-redis"])


# ---------------------------------------------------------------- takeover after kill -9


def _event_seq(event_id: str) -> int:
    return int(event_id.rpartition(":")[2])


def _content_of(data: str) -> str:
    if not data.startswith("{"):
        return ""
    payload = json.loads(data)
    return "".join((c.get("delta") or {}).get("content") or "" for c in payload.get("choices") or [])


def _usage_of(data: str) -> int | None:
    if not data.startswith("{"):
        return None
    usage = json.loads(data).get("usage")
    return usage.get("completion_tokens") if usage else None


def _watch_lease(store: RedisServer, stream_id: str, killed: float, done: threading.Event) -> dict[str, Any]:
    """From the kill on: the dead producer's lease, its expiry, and the claim by another process
    (polled every 2 ms); the last event the dead one wrote, read once its lease is gone."""
    client = store.client()
    key = f"sc:l:{stream_id}"
    try:
        holder, pttl = client.get(key), client.pttl(key)
        seen: dict[str, Any] = {"lease_left_ms": pttl, "expired": None, "claimed": None, "last_seq": None}
        while not done.is_set() and time.perf_counter() - killed < 120:
            value = client.get(key)
            now = time.perf_counter()
            if value != holder and seen["expired"] is None:
                seen["expired"] = now
                top = client.xrevrange(f"sc:s:{stream_id}", count=1)
                seen["last_seq"] = int(top[0][0].split(b"-")[1]) - 1 if top else -1
            if value is not None and value != holder:
                seen["claimed"] = now
                break
            time.sleep(0.002)
        return seen
    finally:
        client.close()


def _tree_cpu(pid: int) -> float:
    """CPU seconds used so far by `pid` and its children."""
    total = 0.0
    for proc in _family(pid):
        with contextlib.suppress(psutil.Error):
            total += sum(proc.cpu_times()[:2])
    return total


async def _read_sse(response: httpx.Response, until_content: int | None = None) -> list[tuple[str, str, float]]:
    """(event id, data, arrival) of each event; stops after `until_content` content events."""
    events: list[tuple[str, str, float]] = []
    event_id, content = "", 0
    async for line in response.aiter_lines():
        if line.startswith("id:"):
            event_id = line[3:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip()
            events.append((event_id, data, time.perf_counter()))
            content += bool(_content_of(data))
            if until_content is not None and content >= until_content:
                break
    return events


async def kill_and_resume(
    a: Target, b: Target, store: RedisServer, prompt: str, args: argparse.Namespace
) -> dict[str, Any]:
    """One trial: A streams, A is killed with SIGKILL, the client resumes on B at once."""
    path, body = _body(a, prompt, args.takeover_tokens)
    async with httpx.AsyncClient(timeout=httpx.Timeout(120)) as client:
        opened = client.stream("POST", a.base_url + path, json=body)
        response = await opened.__aenter__()
        stream_id = response.headers["x-stream-id"]
        before = await _read_sse(response, until_content=args.kill_after)
        a_cpu = _tree_cpu(a.pid)  # type: ignore[arg-type]
        killed = time.perf_counter()
        os.kill(a.pid, signal.SIGKILL)  # type: ignore[arg-type]
        with contextlib.suppress(httpx.HTTPError):  # its connection is gone with it
            await opened.__aexit__(None, None, None)
        done = threading.Event()
        watcher = asyncio.create_task(asyncio.to_thread(_watch_lease, store, stream_id, killed, done))
        headers = {"Last-Event-ID": before[-1][0]}
        try:
            async with client.stream("GET", f"{b.base_url}/v1/streams/{stream_id}", headers=headers) as response:
                status = response.status_code
                after = await _read_sse(response) if status == 200 else []
        finally:
            done.set()
        lease = await watcher
    last_seq = lease["last_seq"] if lease["last_seq"] is not None else _event_seq(before[-1][0])
    new = [t for i, d, t in after if i and _event_seq(i) > last_seq and _content_of(d)]
    replayed = [t for i, _, t in after if i and _event_seq(i) <= last_seq]
    data = [d for _, d, _ in before + after]

    def since_kill(moment: float | None) -> float | None:
        return None if moment is None else (moment - killed) * 1000

    return {
        "stream_id": stream_id,
        "status": status,
        "tokens_before_kill": sum(1 for _, d, _ in before if _content_of(d)),
        "lease_left_ms": lease["lease_left_ms"],
        "kill_to_expired_ms": since_kill(lease["expired"]),
        "kill_to_claimed_ms": since_kill(lease["claimed"]),
        "kill_to_first_replayed_ms": since_kill(replayed[0] if replayed else None),
        "kill_to_first_new_token_ms": since_kill(new[0] if new else None),
        "claim_to_first_new_token_ms": (new[0] - lease["claimed"]) * 1000 if new and lease["claimed"] else None,
        "done": data.count("[DONE]"),
        "completion_tokens": next((u for u in map(_usage_of, reversed(data)) if u is not None), None),
        "text": "".join(_content_of(d) for d in data),
        "a_cpu_s": a_cpu,
    }


def run_takeover(args: argparse.Namespace, store: RedisServer) -> list[dict[str, Any]]:
    """Part 4: per lease length, server B held running, a fresh server A killed in each trial."""
    results = []
    for lease in args.leases:
        flags = ("--stream-store", store.url, "--stream-lease", f"{lease:g}")
        _idle(args)
        with running(_server("streamchat-b", *flags)) as b:
            _start(b, f"server B (--stream-lease {lease:g})")
            ours = lambda: _cpu_seconds(b.pid, (store.proc.pid,))  # noqa: E731  # B, Redis and this harness
            trials = []
            for trial in range(args.trials):
                # a prompt B has not seen: no prefix of it parked there to make the takeover cheap
                prompt = PROMPTS[trial % len(PROMPTS)]
                with running(_server("streamchat-a", *flags)) as a:
                    asyncio.run(wave(a, 1, 8))  # its first request pays for lazy setup, not the one killed
                    time.sleep(0.5)
                    wall0, (busy0, _), ours0, a0 = time.monotonic(), _cpu_times(), ours(), _tree_cpu(a.pid)
                    result = asyncio.run(kill_and_resume(a, b, store, prompt, args))
                    ours1, (busy1, _), wall = ours(), _cpu_times(), time.monotonic() - wall0
                # A's CPU counts as ours up to the kill; after it A is gone from the process table
                others = (busy1 - busy0) / _TICK - (ours1 - ours0) - (result.pop("a_cpu_s") - a0)
                result["others_busy"] = max(0.0, others / (wall * (os.cpu_count() or 1)))
                result["prompt"] = prompt
                trials.append(result)
                _log(
                    f"  lease {lease:g} s, trial {trial + 1}: lease expired {_ms3(result['kill_to_expired_ms'])}, "
                    f"claimed {_ms3(result['kill_to_claimed_ms'])}, first new token "
                    f"{_ms3(result['kill_to_first_new_token_ms'])} ms after the kill, [DONE] x{result['done']}"
                )
            for result in trials:  # after the trials, so that B answers none of their prompts before
                reference = asyncio.run(_uninterrupted(b, result["prompt"], args))
                result["same_as_uninterrupted"] = result.pop("text") == reference
        results.append({"lease_s": lease, "trials": trials, **_medians(trials)})
    return results


async def _uninterrupted(b: Target, prompt: str, args: argparse.Namespace) -> str:
    async with httpx.AsyncClient(timeout=httpx.Timeout(120)) as client:
        return (await stream_once(client, b, prompt, args.takeover_tokens)).text


TIMES = ("kill_to_expired_ms", "kill_to_claimed_ms", "kill_to_first_new_token_ms", "claim_to_first_new_token_ms")


def _medians(trials: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in (*TIMES, "lease_left_ms"):
        values = [t[key] for t in trials if t[key] is not None]
        out[f"median_{key}"] = statistics.median(values) if values else None
    out["all_same"] = all(t["same_as_uninterrupted"] and t["done"] == 1 for t in trials)
    return out


# ---------------------------------------------------------------- summary and report


def _pooled(levels: list[dict[str, Any]]) -> dict[str, Any]:
    """Several measurements of one level (before and after Ray) as one: tokens/s over their summed
    wall time, latencies as their mean (each already a percentile over its own waves)."""
    if len(levels) == 1:
        return levels[0]
    wall = sum(lv["wall_s"] for lv in levels)
    mean = lambda key: statistics.fmean(lv[key] for lv in levels if lv[key] is not None)  # noqa: E731
    return {
        "tokens_per_s": sum(lv["tokens"] for lv in levels) / wall,
        **{k: mean(k) for k in ("ttft_p50", "ttft_p99", "itl_p50", "itl_p99")},
        "others_busy": max(lv["others_busy"] for lv in levels),
    }


def _level(run: dict[str, Any], server: str, c: int, first: bool = False) -> dict[str, Any] | None:
    """A server's figures at one level: its first measurement, or all of them pooled."""
    levels = run["servers"].get(server, {}).get("levels", {}).get(str(c))
    if not levels:
        return None
    return levels[0] if first else _pooled(levels)


def summary(run: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Each target, per level: the figures compared and whether it holds."""
    store, ray = [], []
    for c in args.store_levels:
        # the Redis server's waves that alternated with the memory server's, not those after Ray
        mem, red = _level(run, "streamchat-memory", c, first=True), _level(run, "streamchat-redis", c, first=True)
        if mem and red:
            ratio = red["tokens_per_s"] / mem["tokens_per_s"]
            store.append({"concurrency": c, "ratio": ratio, "holds": ratio >= STORE_TARGET})
    for c in args.ray_levels:
        direct, via = _level(run, "streamchat-redis", c), _level(run, "streamchat-ray", c)
        if direct and via:
            ratio = via["tokens_per_s"] / direct["tokens_per_s"]
            ttft = (via["ttft_p50"] - direct["ttft_p50"]) * 1000
            itl = (via["itl_p50"] - direct["itl_p50"]) * 1000
            ray.append({
                "concurrency": c, "ratio": ratio, "ttft_p50_overhead_ms": ttft, "itl_p50_overhead_ms": itl,
                "holds": {"tokens_per_s": ratio >= RAY_TPS_TARGET, "ttft_p50": ttft <= RAY_TTFT_MS,
                          "itl_p50": itl <= RAY_ITL_MS},
            })  # fmt: skip
    return {"store": store, "ray": ray}


def _ms3(ms: float | None) -> str:
    return "—" if ms is None else f"{ms:.0f}"


def _num(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _verdict(ok: bool) -> str:
    return "holds" if ok else "**missed**"


def _throughput_rows(run: dict[str, Any]) -> list[str]:
    rows = []
    for name, server in run["servers"].items():
        for c, levels in server.get("levels", {}).items():
            for i, lv in enumerate(levels):
                when = "" if len(levels) == 1 else (" (before Ray)" if i == 0 else " (after Ray)")
                rows.append(
                    f"| {name}{when} | {c} | {lv['tokens_per_s']:.1f} | {_ms(lv['ttft_p50'])} | {_ms(lv['ttft_p99'])} "
                    f"| {_ms(lv['itl_p50'])} | {_ms(lv['itl_p99'])} | {lv['exact']}/{lv['requests']} | {lv['waves']} "
                    f"| {lv['rss_peak_mb']:.0f} | {lv['others_busy']:.0%} |"
                )
    return rows


def _cost_rows(run: dict[str, Any]) -> list[str]:
    rows = []
    for name, server in run["servers"].items():
        for c, levels in server.get("levels", {}).items():
            for i, lv in enumerate(levels):
                r = lv.get("redis")
                if not r:
                    continue
                when = "" if len(levels) == 1 else (" (before Ray)" if i == 0 else " (after Ray)")
                kb = r["key_bytes"]
                per_stream = {k: v / r["streams"] for k, v in kb.items()} if r["streams"] else {}
                rows.append(
                    f"| {name}{when} | {c} | {r['streams']} | {r['tokens']} | {_num(r['events_per_token'], 3)} "
                    f"| {_num(r['used_memory_per_token'], 0)} | {_num(r['key_bytes_per_token'], 0)} "
                    f"| {_num(r['key_bytes_per_stream'], 0)} ({_num(per_stream.get('events'), 0)} / "
                    f"{_num(per_stream.get('meta'), 0)} / {_num(per_stream.get('tokens'), 0)}) "
                    f"| {_num(r['key_bytes_per_event'], 0)} | {_num(r['commands_per_token'], 2)} "
                    f"| {_num(r['scripts_per_token'], 3)} | {_num(r['xread_per_token'], 3)} "
                    f"| {_num(r['cpu_us_per_token'], 1)} | {_num(r['net_in_per_token'], 0)} / "
                    f"{_num(r['net_out_per_token'], 0)} | {r.get('clients_most', '—')} |"
                )
    return rows


def markdown(run: dict[str, Any]) -> str:
    """The run as markdown: context, the targets, every level, Redis's cost, the takeover trials."""
    m, s = run["machine"], run["summary"]
    lines = [
        f"## Scaling run of {run['started']}",
        "",
        f"- Machine: {m['nproc']} cores ({m['cpu']}), {m['memory']} memory; Python {m['python']}, "
        f"llama-cpp-python {m['llama-cpp-python']}, ray {run['versions']['ray']}, redis-server "
        f"{run['versions']['redis-server']}; commit {m['commit']}",
        f"- Command: `{run['command']}`",
        f"- Each request: one user prompt, greedy, exactly {run['args']['tokens']} tokens "
        "(`ignore_eos`, `min_tokens`); a level's waves alternate between the servers measured at it; "
        f"at least {run['args']['waves']} waves and {run['args']['level_tokens']} tokens per server and level.",
        *(f"  - {n}: {r['note']}" for n, r in run["servers"].items()),
        "",
    ]
    if s["store"] or s["ray"]:
        lines += ["Targets:", ""]
        for t in s["store"]:
            lines.append(
                f"- Redis log ≥ {STORE_TARGET}× memory tokens/s at C={t['concurrency']}: "
                f"{t['ratio']:.3f}× — {_verdict(t['holds'])}"
            )
        for t in s["ray"]:
            h = t["holds"]
            lines.append(
                f"- Ray Serve, 1 replica, against the direct server at C={t['concurrency']}: tokens/s "
                f"{t['ratio']:.3f}× (≥ {RAY_TPS_TARGET}: {_verdict(h['tokens_per_s'])}), TTFT p50 "
                f"{t['ttft_p50_overhead_ms']:+.1f} ms (≤ {RAY_TTFT_MS:.0f}: {_verdict(h['ttft_p50'])}), ITL p50 "
                f"{t['itl_p50_overhead_ms']:+.1f} ms (≤ {RAY_ITL_MS:.0f}: {_verdict(h['itl_p50'])})"
            )
        lines += [
            "",
            "Every level (TTFT, ITL in ms; RSS: the server with its child processes, for Ray the whole "
            "local cluster; others' CPU: the share of all CPUs used by processes other than the server, "
            "Redis and the harness, wall-weighted over the level's waves):",
            "",
            "| server | C | tokens/s | TTFT p50 | TTFT p99 | ITL p50 | ITL p99 | exact length | waves | RSS peak MiB "
            "| others' CPU |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            *_throughput_rows(run),
        ]
    costs = _cost_rows(run)
    if costs:
        lines += [
            "",
            "Redis per generated token, from the same waves: memory = `INFO` used_memory after − before "
            "(the streams kept for `--stream-retention`), keys = `MEMORY USAGE` of each stream's keys "
            "(per stream: events / meta / tokens); commands = `INFO commandstats` calls, those run inside "
            "the log's Lua scripts included, the harness's own left out; scripts and XREAD = those calls "
            "alone; CPU = Redis's used_cpu_user + used_cpu_sys; network = bytes in / out; connections = "
            "Redis's connected_clients after a wave, most of the level (the servers' pools keep one per "
            "reader that was blocked in XREAD at once).",
            "",
            "| server | C | streams | tokens | events/token | memory B/token | keys B/token | keys B/stream "
            "| B/event (events key) | commands/token | scripts/token | XREAD/token | Redis CPU µs/token "
            "| network B/token | connections |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            *costs,
        ]
    if run.get("takeover"):
        lines += [
            "",
            f"kill -9 of the producing server after {run['args']['kill_after']} of "
            f"{run['args']['takeover_tokens']} tokens, the client reconnecting at once to a server already "
            "running on the same Redis with `Last-Event-ID`; medians of the trials, ms after the kill:",
            "",
            "| --stream-lease | trials | lease left at the kill | lease expired | claimed by B "
            "| first new token | claim → first new token | answer = uninterrupted, one [DONE] |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for t in run["takeover"]:
            lines.append(
                f"| {t['lease_s']:g} s | {len(t['trials'])} | {_ms3(t['median_lease_left_ms'])} "
                f"| {_ms3(t['median_kill_to_expired_ms'])} | {_ms3(t['median_kill_to_claimed_ms'])} "
                f"| {_ms3(t['median_kill_to_first_new_token_ms'])} | {_ms3(t['median_claim_to_first_new_token_ms'])} "
                f"| {'yes' if t['all_same'] else '**no**'} |"
            )
        lines += ["", "Each trial (ms after the kill):", ""]
        lines += ["| lease | first new token | lease expired | claimed | others' CPU |", "|---|---|---|---|---|"]
        for t in run["takeover"]:
            for trial in t["trials"]:
                lines.append(
                    f"| {t['lease_s']:g} s | {_ms3(trial['kill_to_first_new_token_ms'])} "
                    f"| {_ms3(trial['kill_to_expired_ms'])} | {_ms3(trial['kill_to_claimed_ms'])} "
                    f"| {trial['others_busy']:.0%} |"
                )
    notes = _notes(run)
    return "\n".join(lines + (["", "Notes:", *notes] if notes else [])) + "\n"


def _notes(run: dict[str, Any]) -> list[str]:
    notes = [f"- **The run stopped early**: {run['failed'].splitlines()[0]}"] if run.get("failed") else []
    for name, server in run["servers"].items():
        if server.get("skipped"):
            notes.append(f"- **{name} skipped**: {server['skipped'].splitlines()[0]}")
        for c, levels in server.get("levels", {}).items():
            for lv in levels:
                if len(lv.get("others_by_attempt", [])) > 1:
                    shares = ", ".join(f"{x:.0%}" for x in lv["others_by_attempt"])
                    notes.append(f"- {name} C={c}: measured {len(lv['others_by_attempt'])} times (others: {shares})")
                if lv["others_busy"] > run["args"]["max_others"]:
                    notes.append(f"- ⚠ {name} C={c}: other processes used {lv['others_busy']:.0%} of the CPUs")
                if lv.get("errors"):
                    notes.append(f"- {name} C={c}: {len(lv['errors'])} errors, first: {lv['errors'][0]}")
                if lv.get("wrong_lengths"):
                    notes.append(f"- {name} C={c}: lengths ≠ {run['args']['tokens']}: {lv['wrong_lengths']}")
    return notes


def _redis_version() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        return "-"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    return next((part.removeprefix("v=") for part in out.split() if part.startswith("v=")), "?")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _stop_on_signals()
    args = parse_args(argv)
    run: dict[str, Any] = {
        "started": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": shlex.join(["python", "-m", "bench.scaling", *argv]),
        "machine": machine(),
        "versions": {"ray": _version("ray"), "redis-server": _redis_version()},
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "servers": {},
        "takeover": [],
    }
    with running_redis() as store:
        _log(f"redis-server on port {store.port} (pid {store.proc.pid})")
        try:
            if "store" in args.parts or "ray" in args.parts:
                run_throughput(args, store, run["servers"])
            if "takeover" in args.parts:
                run["takeover"] = run_takeover(args, store)
        except (Unavailable, httpx.HTTPError, OSError, RuntimeError, KeyError, ValueError) as exc:
            # what was measured before is still written, with the reason the rest is missing
            _log(f"stopped: {traceback.format_exc()}")
            run["failed"] = f"{type(exc).__name__}: {exc}"
    run["summary"] = summary(run, args)
    text = markdown(run)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text, encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(run, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
