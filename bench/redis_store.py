"""A redis-server of the benchmark's own, and what the stream log costs it per generated token.

Why a server of its own: the figures are deltas of Redis's counters (`INFO`), which only mean
something when nothing else uses that Redis. It runs Debian's `redis-server` on a free loopback
port with a temporary folder and no persistence, as the tests' fixture does.

Why these counters: Redis keeps every stream's events for `--stream-retention` after it ends, so
its memory grows with streams started, not with streams live; it is single-threaded, so its
capacity is its CPU time per token (what `used_cpu_*` says), more than its command count (one
write of the log is one Lua script that runs ~10 commands, each counted by `INFO`).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.peers import Unavailable, free_port

# Commands the benchmark itself sends to read Redis's state, and connection set-up; not the log's.
OWN_COMMANDS = frozenset({"info", "scan", "memory", "xlen", "client", "hello", "ping", "config"})
SCRIPT_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro")
KEY_KINDS = {"sc:s:": "events", "sc:m:": "meta", "sc:t:": "tokens", "sc:l:": "lease"}


@dataclass
class RedisServer:
    """One redis-server process, stopped by `stop`."""

    port: int
    folder: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@contextlib.contextmanager
def running_redis() -> Iterator[RedisServer]:
    """A fresh redis-server for the block; raises Unavailable when there is none to run."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise Unavailable("redis-server is not installed (apt-get install redis-server; make test does)")
    folder = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    port = free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--save", "",
           "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"]  # fmt: skip
    with (folder / "redis.log").open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    server = RedisServer(port, folder, proc)
    try:
        _wait_listening(server)
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _wait_listening(server: RedisServer, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=0.2):
                return
        except OSError:
            if server.proc.poll() is not None or time.monotonic() > deadline:
                log = (server.folder / "redis.log").read_text(errors="replace")
                raise Unavailable(f"redis-server did not start: {log[-500:]}") from None
            time.sleep(0.05)


@dataclass
class Snapshot:
    """Redis's counters at one moment, and the streams it holds then."""

    used_memory: int
    calls: dict[str, int]  # per command, from INFO commandstats (commands inside scripts included)
    cpu_s: float  # used_cpu_user + used_cpu_sys of the server process
    net_in: int
    net_out: int
    clients: int = 0  # connections open (a reader blocked in XREAD holds one)
    streams: set[str] = field(default_factory=set)  # stream ids with an events key


def from_info(info: dict[str, Any], streams: set[str] | None = None) -> Snapshot:
    """A snapshot from `INFO all` as redis-py parses it (`cmdstat_<name>: {"calls": n, ...}`)."""
    calls = {
        key.removeprefix("cmdstat_").lower(): int(value["calls"])
        for key, value in info.items()
        if key.startswith("cmdstat_") and isinstance(value, dict)
    }
    return Snapshot(
        used_memory=int(info["used_memory"]),
        calls=calls,
        cpu_s=float(info["used_cpu_user"]) + float(info["used_cpu_sys"]),
        net_in=int(info["total_net_input_bytes"]),
        net_out=int(info["total_net_output_bytes"]),
        clients=int(info.get("connected_clients", 0)),
        streams=set(streams or ()),
    )


def stream_ids(client: redis.Redis) -> set[str]:
    """Ids of the streams whose events Redis holds."""
    return {key.decode().removeprefix("sc:s:") for key in client.scan_iter(match="sc:s:*", count=1000)}


def snapshot(client: redis.Redis) -> Snapshot:
    streams = stream_ids(client)
    return from_info(client.info("all"), streams)


def command_delta(before: Snapshot, after: Snapshot) -> dict[str, int]:
    """Calls per command between two snapshots, without the benchmark's own."""
    names = set(before.calls) | set(after.calls)
    delta = {name: after.calls.get(name, 0) - before.calls.get(name, 0) for name in names}
    return {name: n for name, n in sorted(delta.items()) if n > 0 and name not in OWN_COMMANDS}


def key_bytes(client: redis.Redis, streams: set[str]) -> dict[str, Any]:
    """Memory of each kind of key of these streams (`MEMORY USAGE`, exact), and their events."""
    totals = {kind: 0 for kind in KEY_KINDS.values()}
    events = 0
    for stream_id in streams:
        for prefix, kind in KEY_KINDS.items():
            totals[kind] += int(client.memory_usage(f"{prefix}{stream_id}", samples=0) or 0)
        entries = client.xrevrange(f"sc:s:{stream_id}", count=1)
        closed = bool(entries) and entries[0][0] == b"1-0"  # the closing sentinel is not an event
        events += int(client.xlen(f"sc:s:{stream_id}")) - int(closed)
    return {"bytes": totals, "events": events}


def cost(before: Snapshot, after: Snapshot, keys: dict[str, Any], tokens: int) -> dict[str, Any]:
    """What the streams started between two snapshots cost Redis, per generated token, per event
    and per stream; `keys` is `key_bytes` of those streams, `tokens` what they generated."""
    streams = len(after.streams - before.streams)
    calls = command_delta(before, after)
    commands = sum(calls.values())
    events = keys["events"]
    held = sum(keys["bytes"].values())

    def per(value: float, n: int) -> float | None:
        return value / n if n else None

    return {
        "streams": streams,
        "tokens": tokens,
        "events": events,
        "events_per_token": per(events, tokens),
        "used_memory_delta": after.used_memory - before.used_memory,
        "used_memory_per_token": per(after.used_memory - before.used_memory, tokens),
        "key_bytes": keys["bytes"],
        "key_bytes_per_stream": per(held, streams),
        "key_bytes_per_event": per(keys["bytes"]["events"], events),
        "key_bytes_per_token": per(held, tokens),
        "commands": calls,
        "commands_per_token": per(commands, tokens),
        "scripts_per_token": per(sum(calls.get(name, 0) for name in SCRIPT_COMMANDS), tokens),
        "xread_per_token": per(calls.get("xread", 0), tokens),
        "cpu_us_per_token": per((after.cpu_s - before.cpu_s) * 1e6, tokens),
        "net_in_per_token": per(after.net_in - before.net_in, tokens),
        "net_out_per_token": per(after.net_out - before.net_out, tokens),
        "clients_after": after.clients,
    }
