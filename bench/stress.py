"""What the stress benchmarks share: a streamchat server on a free loopback port, and its memory.

`slow_readers`, `overload` and `soak` each start their own server with the limits they need, watch
its resident memory from outside (psutil; the engine runs in the server's process), and stop it
when done, whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from bench.client import percentile
from bench.report import machine

LOGS = Path(__file__).resolve().parent / ".cache" / "logs"  # ignored, like the other benchmarks' logs
MB = 2**20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    pid: int
    log: Path

    def rss_mb(self) -> float:
        return psutil.Process(self.pid).memory_info().rss / MB

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=10).json()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Until nothing runs or waits in the engine."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            h = self.health()
            if h["running"] == 0 and h["waiting"] == 0:
                return True
            time.sleep(0.5)
        return False


@contextlib.contextmanager
def serve(name: str, *flags: str, ready_timeout: float = 300.0) -> Iterator[Server]:
    port = free_port()
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"{name}.log"
    argv = [sys.executable, "-m", "streamchat", "serve", "--host", "127.0.0.1", "--port", str(port), *flags]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", proc.pid, log)
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}; see {log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {ready_timeout:.0f} s; see {log}")
            time.sleep(0.5)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@dataclass
class RssSampler:
    """Samples a server's RSS on a thread, every `interval` seconds, while the block runs."""

    server: Server
    interval: float = 0.5
    samples: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self.samples.append(self.server.rss_mb())
            self._stop.wait(self.interval)

    @property
    def peak(self) -> float:
        return max(self.samples, default=0.0)


def ms(values: list[float], q: float) -> str:
    p = percentile(values, q)
    return "—" if p is None else f"{p * 1000:.1f}"


def machine_line() -> str:
    m = machine()
    return ", ".join(f"{k}: {v}" for k, v in m.items())


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
