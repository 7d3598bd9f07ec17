"""One real server for the whole run, started as `python -m streamchat serve` on a free loopback port.

Keep-alive pings are switched to every second so every streaming test also shows that the pings
never break a client (the official `openai` SDK included). `--default-max-tokens` keeps ChatGLM
requests that give no `max_length` short, and a short `--resume-grace` lets a dropped resumable
stream be reaped within the test's patience. Everything else is the default, prefix reuse
included: greedy answers are compared byte for byte, and with one KV stream per sequence a reused
prefix holds the cells a fresh prefill computes, so answers do not change.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from tests.redis_server import running_redis
from tests.support import PING_INTERVAL_S, RESUME_GRACE_S

STARTUP_TIMEOUT_S = 240.0  # the first start converts the GGUF (~20 s, more on a busy machine)
CLIENT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(encoding="utf-8", errors="replace")[-chars:]


@dataclass
class RunningServer:
    url: str
    proc: subprocess.Popen
    log_path: Path


@contextmanager
def running_server(log_dir: Path, *flags: str) -> Iterator[RunningServer]:
    """`python -m streamchat serve FLAGS` on a free loopback port, ready when yielded, stopped after."""
    port = _free_port()
    log_path = log_dir / "server.log"
    cmd = [sys.executable, "-m", "streamchat", "serve", "--host", "127.0.0.1", "--port", str(port), *flags]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, url, log_path)
        yield RunningServer(url, proc, log_path)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture(scope="session")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    flags = [
        "--max-num-seqs", "16",
        "--ping-interval", str(PING_INTERVAL_S),
        "--default-max-tokens", "32",
        "--resume-grace", str(RESUME_GRACE_S),
        "--log-level", "warning",
    ]  # fmt: skip
    with running_server(tmp_path_factory.mktemp("server"), *flags) as server:
        yield server.url


def _wait_ready(proc: subprocess.Popen, url: str, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{_log_tail(log_path)}")
        try:
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    pytest.fail(f"server not ready after {STARTUP_TIMEOUT_S:.0f} s:\n{_log_tail(log_path)}")


@pytest.fixture
def http(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=CLIENT_TIMEOUT) as client:
        yield client


@pytest.fixture
def oai(base_url: str) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", timeout=60.0, max_retries=0)
    yield client
    client.close()


@pytest.fixture(scope="session")
def model_name(base_url: str) -> str:
    return httpx.get(f"{base_url}/health", timeout=CLIENT_TIMEOUT).json()["model"]


@pytest.fixture(scope="session")
def tokenizer():
    """The embedded model's real tokenizer (no weights loaded)."""
    from transformers import AutoTokenizer

    from streamchat.config import default_cache_dir
    from streamchat.engine.model_files import embedded_gguf
    from streamchat.engine.transformers.loader import _converted_gguf

    return AutoTokenizer.from_pretrained(_converted_gguf(embedded_gguf(), default_cache_dir()))


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of the module's own, on a free port with a temp dir (skips without one)."""
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server.url
