"""Start and stop each server under test on a free loopback port, one at a time.

Each peer needs its own knobs to produce answers of an exact length and to run at all here;
the reasons are in ``shared/PEERS.md`` and repeated next to each entry below.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.client import Target
from bench.models import CACHE, FP32_DIR, ensure_fp32_copy, gguf_path

ROOT = Path(__file__).resolve().parent.parent
LOGS = CACHE / "logs"
LLAMA_SERVER = CACHE / "llama.cpp-build" / "bin" / "llama-server"
PY = sys.executable
TRANSFORMERS = str(Path(PY).parent / "transformers")
LLAMA_CPP_FLAGS = ["--n_ctx", "8192", "--n_threads", "2", "--n_threads_batch", "2"]
LLAMA_CPP_FLAGS += ["--interrupt_requests", "False"]  # the default True cuts streams under concurrency


class Unavailable(RuntimeError):
    """The server cannot be run here; the message says why and how to fix it."""


@dataclass
class Peer:
    """How to launch one server and talk to it."""

    name: str
    argv: Callable[[int], list[str]]  # port -> command line
    protocol: str = "openai"
    health: str = "/health"
    extra_body: Callable[[int], dict[str, Any]] = lambda n: {}
    prepare: Callable[[], None] = lambda: None
    model: str = ""  # empty: ask GET /v1/models
    note: str = ""
    env: dict[str, str] = field(default_factory=dict)
    plain_body: dict[str, Any] = field(default_factory=dict)  # plain greedy: no repetition penalty
    metrics: str = ""  # a Prometheus endpoint with streamchat's counters, if any


def _listen(port: int) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(port)]


def _need_module(module: str, install: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise Unavailable(f"python module {module!r} is missing: {install}")


def _build_llama_server() -> None:
    if not LLAMA_SERVER.is_file():
        print("building llama-server from the llama-cpp-python sdist (once, ~6 min)", file=sys.stderr)
        subprocess.run(["bash", str(ROOT / "bench" / "build_llama_server.sh")], check=True)


def _streamchat(name: str, engine: str | None, *flags: str, model_defaults: bool = False) -> Peer:
    """`model_defaults`: requests keep the model's own sampling defaults (the embedded model's
    repetition penalty 1.15) instead of the plain greedy decoding every other server is asked for."""
    extra = (["--engine", engine] if engine else []) + list(flags)
    note = " ".join(["streamchat", *extra])
    if model_defaults:
        note += " (requests keep the model's sampling defaults)"
    return Peer(
        name=name,
        argv=lambda p: [PY, "-m", "streamchat", "serve", *_listen(p), *extra],
        extra_body=lambda n: {"ignore_eos": True, "min_tokens": n},
        prepare=lambda: _need_module("streamchat", "the streamchat package is not importable yet"),
        note=note,
        plain_body={} if model_defaults else {"repetition_penalty": 1.0},  # the embedded model's default is 1.15
        metrics="/metrics",
    )


def _llama_server(name: str, context: int) -> Peer:
    """16 slots of `context` / 16 cells each, continuous batching on by default; ignore_eos forces
    the length (min_tokens does not)."""
    return Peer(
        name=name,
        argv=lambda p: [
            str(LLAMA_SERVER),
            "-m",
            str(gguf_path()),
            *["-c", str(context), "-np", "16", "--threads", "2"],
            *_listen(p),
        ],
        extra_body=lambda n: {"ignore_eos": True},
        prepare=_build_llama_server,
        note=f"llama.cpp llama-server -c {context} -np 16 --threads 2 (Q4_1 GGUF)",
        plain_body={"repeat_penalty": 1.0},
    )


def _transformers_serve(name: str, batching: bool) -> Peer:
    cb = ["--continuous-batching"] if batching else []
    # --continuous-batching ignores min_new_tokens; eos_token_id -1 is what forces the length.
    config = lambda n: {"min_new_tokens": n, "max_new_tokens": n, "do_sample": False, "eos_token_id": -1}  # noqa: E731
    return Peer(
        name=name,
        argv=lambda p: [TRANSFORMERS, "serve", *cb, "--dtype", "float32", *_listen(p), str(FP32_DIR)],
        extra_body=lambda n: {"generation_config": json.dumps(config(n))},
        prepare=lambda: (_need_module("uvicorn", "pip install 'transformers[serving]'"), ensure_fp32_copy()),
        model=str(FP32_DIR),
        note=f"transformers serve{' --continuous-batching' if batching else ''} (fp32 copy of the GGUF)",
    )


PEERS: dict[str, Peer] = {
    "seed": Peer(
        name="seed",
        argv=lambda p: [PY, "-m", "bench.seed_server", *_listen(p)],
        protocol="seed",
        health="/openapi.json",
        extra_body=lambda n: {"max_new_tokens": n, "min_new_tokens": n},
        note="the seed's blocking design (bench/seed_server.py), fp32",
    ),
    "streamchat": _streamchat("streamchat", None),
    "streamchat-transformers": _streamchat("streamchat-transformers", "transformers"),
    "streamchat-llamacpp": _streamchat("streamchat-llamacpp", "llamacpp"),
    # rows prefill more than 63 tokens per forward: faster prefill, greedy answers may depend on the batch
    # fewer rows per step
    "streamchat-llamacpp-16": _streamchat("streamchat-llamacpp-16", "llamacpp", "--max-num-seqs", "16"),
    "streamchat-llamacpp-32": _streamchat("streamchat-llamacpp-32", "llamacpp", "--max-num-seqs", "32"),
    "streamchat-llamacpp-fast": _streamchat("streamchat-llamacpp-fast", "llamacpp", "--batch-invariant", "false"),
    "streamchat-nospec": _streamchat("streamchat-nospec", None, "--spec-tokens", "0"),  # no speculative decoding
    # the model's own sampling defaults in every request (repetition penalty 1.15): what a client that sets none gets
    "streamchat-model-defaults": _streamchat("streamchat-model-defaults", None, model_defaults=True),
    "transformers-serve": _transformers_serve("transformers-serve", True),
    "transformers-serve-nocb": _transformers_serve("transformers-serve-nocb", False),
    # 2,048 positions per slot, as streamchat's default context: a long prompt fits
    "llama-server": _llama_server("llama-server", 32768),
    "llama-server-8k": _llama_server("llama-server-8k", 8192),  # the earlier runs' setting: 512 per slot
    # One request at a time; the default --interrupt_requests True cuts streams under concurrency.
    "llama-cpp-server": Peer(
        name="llama-cpp-server",
        argv=lambda p: [
            PY,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf_path()),
            *LLAMA_CPP_FLAGS,
            *_listen(p),
        ],
        health="/v1/models",
        extra_body=lambda n: {"min_tokens": n},
        prepare=lambda: _need_module("llama_cpp.server", "pip install 'llama-cpp-python[server]'"),
        note="llama-cpp-python python -m llama_cpp.server --interrupt_requests False (Q4_1 GGUF)",
    ),
}


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable(f"exited with code {proc.returncode} while starting:\n{_tail(log)}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.5)
    raise Unavailable(f"not ready after {timeout:.0f} s:\n{_tail(log)}")


def _model_name(base_url: str) -> str:
    data = httpx.get(base_url + "/v1/models", timeout=10).json().get("data") or [{}]
    return data[0].get("id", "")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server itself and let it stop what it started; then SIGTERM, and if need be
    SIGKILL, its process group for whatever is left.

    Why the server first: `streamchat serve --replicas` stops its local Ray cluster and that
    cluster's HAProxy itself. Signalled as a group, Ray's processes die under it, its shutdown
    waits on them until the SIGKILL, and the HAProxy (in a session of its own) is left holding the
    port."""
    if proc.poll() is not None:
        return
    for signal_group, sig, wait in (
        (False, signal.SIGTERM, 30),
        (True, signal.SIGTERM, 10),
        (True, signal.SIGKILL, 10),
    ):
        with contextlib.suppress(ProcessLookupError):
            if signal_group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # children the server left behind
        return


@contextlib.contextmanager
def running(peer: Peer, ready_timeout: float = 300.0) -> Iterator[Target]:
    """Run ``peer`` for the duration of the block; raises Unavailable if it will not start."""
    try:
        peer.prepare()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise Unavailable(f"preparation failed: {exc}") from exc
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"{peer.name}.log"
    with log.open("wb") as out:
        try:
            proc = subprocess.Popen(
                peer.argv(port),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, **peer.env},
                start_new_session=True,
            )
        except OSError as exc:
            raise Unavailable(f"cannot start: {exc}") from exc
        try:
            _wait_ready(proc, base_url + peer.health, log, ready_timeout)
            model = peer.model or (_model_name(base_url) if peer.protocol == "openai" else "")
            yield Target(base_url, peer.protocol, model, peer.extra_body, peer.plain_body, proc.pid, peer.metrics)
        finally:
            _stop(proc)
