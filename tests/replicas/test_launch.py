"""`streamchat serve --replicas 2` as a real process on a real local Ray cluster, Redis as the store.

One cluster and one deployment for the module: the cluster is started here (`ray.init`, two
replicas of the embedded model with one thread each) and the CLI joins it with `--ray-address`,
as it would join a production cluster; the fixture's SIGTERM checks the shutdown.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from streamchat.config import Settings
from streamchat.replicas.options import ingress_environment
from tests.conftest import _wait_ready
from tests.redis_server import RedisServer, free_port, running_redis
from tests.support import LONG_ANSWER, parse_sse, wait_for

ray = pytest.importorskip("ray", reason="ray[serve] is not installed (make test installs it)")

RESUME_GRACE_S = 1
MODEL = "SmolLM2-135M-Instruct"  # the embedded model
HI = [{"role": "user", "content": "Hi"}]
CHAT = {"messages": [{"role": "user", "content": "Tell me about the sea."}], "temperature": 0, "stream": True}


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A local cluster of this test process; replicas ask for one logical CPU each. Its processes
    get the environment of the default ingress (HAProxy in front of replicas serving HTTP), as the
    local cluster `streamchat serve --replicas` starts does."""
    folder = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    environment = ingress_environment(Settings(replicas=2))
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        try:
            ray.init(num_cpus=4, include_dashboard=False, _temp_dir=folder, logging_level="WARNING")
        except Exception as exc:  # a sandbox without shared memory or local ports
            pytest.skip(f"a local Ray cluster cannot start here: {exc!r}")
        try:
            yield ray.get_runtime_context().gcs_address
        finally:
            ray.shutdown()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


def serve_cmd(*flags: str) -> list[str]:
    return [sys.executable, "-m", "streamchat", "serve", *flags]


@pytest.fixture(scope="module")
def proxy_url(ray_address: str, redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log_path = tmp_path_factory.mktemp("replicas") / "serve.log"
    flags = ["--replicas", "2", "--stream-store", redis.url, "--ray-address", ray_address,
             "--host", "127.0.0.1", "--port", str(port), "--threads", "1", "--max-num-seqs", "4",
             "--resume-grace", str(RESUME_GRACE_S), "--default-max-tokens", "32", "--log-level", "warning"]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(serve_cmd(*flags), stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, url, log_path)
        assert wait_for(lambda: len(replica_health(url, 1)) == 2, 60), "both replicas answer"
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log_path.read_text(errors="replace")[-3000:]
    with pytest.raises(httpx.TransportError):  # Serve and its proxy are gone with the application
        httpx.get(f"{url}/health", timeout=2)


def replica_health(url: str, seconds: float = 20) -> dict[int, dict]:
    """Each replica's /health, by process id: the proxy picks a replica per request, so ask until
    both have answered."""
    seen: dict[int, dict] = {}
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=10) as client:
        while len(seen) < 2 and time.monotonic() < deadline:
            body = client.get(f"{url}/health").json()
            seen[body["pid"]] = body
    return seen


def replica_pids() -> list[int]:
    """The replicas' processes on this machine, found by the name Ray gives them."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::ServeReplica:streamchat:"):
                    pids.append(int(entry.name))
            except OSError:  # gone meanwhile
                continue
    return pids


def stat_fields(pid: int | str) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces): state first,
    then the parent's id, ..., user and system CPU ticks at 11 and 12."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def busiest(pids: list[int], seconds: float = 0.5) -> int:
    """The process among `pids` that used the most CPU over `seconds`: the one generating. Asked over
    HTTP, a load balancer that prefers the least busy replica would never show the busy one."""

    def ticks(pid: int) -> int:
        fields = stat_fields(pid)
        return int(fields[11]) + int(fields[12])

    before = {pid: ticks(pid) for pid in pids}
    time.sleep(seconds)
    return max(pids, key=lambda pid: ticks(pid) - before[pid])


def test_a_streamed_answer_arrives_token_by_token_through_the_proxy(proxy_url: str) -> None:
    body = {**CHAT, "max_tokens": 48, "ignore_eos": True}
    arrivals: list[float] = []
    with httpx.stream("POST", f"{proxy_url}/v1/chat/completions", json=body, timeout=60) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data:") and '"content":"' in line and '"content":""' not in line:
                arrivals.append(time.monotonic())
    assert len(arrivals) == 48  # one chunk per token
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    # buffered, the chunks would arrive together at the end; as produced, one decode step apart
    assert statistics.median(gaps) > 0.002, gaps
    assert arrivals[-1] - arrivals[0] > 0.1


def test_the_openai_sdk_works_through_the_proxy(proxy_url: str) -> None:
    with openai.OpenAI(base_url=f"{proxy_url}/v1", api_key="unused", timeout=60, max_retries=0) as client:
        (model,) = [m.id for m in client.models.list()]
        messages = [{"role": "user", "content": "Name three colours of the rainbow."}]
        whole = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=12)
        chunks = list(
            client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=12, stream=True)
        )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content and streamed  # both replicas answer alike


def test_a_request_id_comes_back_once(proxy_url: str) -> None:
    """Ray's proxy echoes it, and so did the app: a client read "id, id"."""
    mine = httpx.get(f"{proxy_url}/health", headers={"X-Request-Id": "trace-7"}, timeout=10)
    assert mine.headers.get_list("x-request-id") == ["trace-7"]
    assert len(httpx.get(f"{proxy_url}/v1/models", timeout=10).headers.get_list("x-request-id")) == 1


@pytest.mark.parametrize(
    ("method", "path", "body", "expect"),
    [
        ("GET", "/", None, "<html"),
        ("GET", "/metrics", None, "streamchat_requests_aborted"),
        ("POST", "/v1/completions", {"prompt": "The sea is", "max_tokens": 4, "stream": True}, "[DONE]"),
        ("POST", "/v1/messages", {"model": MODEL, "max_tokens": 4, "messages": HI, "stream": True}, "message_stop"),
        (
            "POST",
            "/v1/responses",
            {"input": "Hi", "max_output_tokens": 4, "stream": True},
            "response.output_text.delta",
        ),
        ("POST", "/api/chat", {"model": MODEL, "messages": HI, "options": {"num_predict": 4}}, '"done":true'),
        ("POST", "/stream", {"prompt": "你好", "history": [], "max_length": 64}, "[DONE]"),
        ("GET", "/stream?prompt=hi", None, "[DONE]"),
        ("POST", "/", {"prompt": "你好", "history": [], "max_length": 64}, '"response"'),
    ],
)
def test_every_protocol_answers_through_the_proxy(proxy_url: str, method: str, path: str, body, expect: str) -> None:
    resp = httpx.request(method, f"{proxy_url}{path}", json=body, timeout=60)
    assert resp.status_code == 200, resp.text
    assert expect in resp.text


def test_a_client_that_leaves_aborts_its_request_on_the_replica(proxy_url: str) -> None:
    before = replica_health(proxy_url)
    assert len(before) == 2
    body = {**CHAT, "max_tokens": LONG_ANSWER, "ignore_eos": True}
    with httpx.stream("POST", f"{proxy_url}/v1/chat/completions", json=body, timeout=60) as resp:
        stream_id = resp.headers["x-stream-id"]
        assert '"content":"' in next(line for line in resp.iter_lines() if '"content":"' in line)
    # the reader left; after --resume-grace the replica aborts the request in its engine

    def aborted() -> int:
        now = replica_health(proxy_url)
        return sum(now[pid]["aborted"] - before[pid]["aborted"] for pid in before if pid in now)

    assert wait_for(lambda: aborted() == 1, timeout=RESUME_GRACE_S + 20, interval=0.5), stream_id
    idle = replica_health(proxy_url)
    assert all(h["running"] == 0 for h in idle.values()), idle  # nothing left generating 1,500 tokens


def test_resuming_through_the_proxy_replays_the_stream_from_redis(proxy_url: str) -> None:
    """Whichever replica the resume reaches, the events come from the shared log."""
    first = httpx.post(f"{proxy_url}/v1/chat/completions", json={**CHAT, "max_tokens": 12}, timeout=60)
    stream_id = first.headers["x-stream-id"]
    events = [e.data for e in parse_sse(first.text).events]
    for _ in range(4):  # the proxy spreads these over both replicas
        rest = httpx.get(f"{proxy_url}/v1/streams/{stream_id}", headers={"Last-Event-ID": f"{stream_id}:2"})
        assert [e.data for e in parse_sse(rest.text).events] == events[3:]


def test_more_than_one_replica_is_refused_without_the_redis_stream_store(tmp_path: Path) -> None:
    done = subprocess.run(serve_cmd("--replicas", "2", "--port", "0"), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--replicas 2 needs --stream-store redis://host:port/db" in done.stderr


def content(events: list) -> str:
    text = ""
    for e in events:
        if e.data.startswith("{") and '"choices"' in e.data:
            choices = json.loads(e.data)["choices"]
            text += "".join(c["delta"].get("content") or "" for c in choices)
    return text


def test_a_stream_survives_kill_9_of_its_replica(proxy_url: str) -> None:
    """The replica producing a greedy answer dies after 20 of its 160 tokens; a reconnect through the
    proxy reaches the other one, which takes the stream over from Redis and finishes it."""
    body = {**CHAT, "max_tokens": 160, "ignore_eos": True}
    whole = parse_sse(httpx.post(f"{proxy_url}/v1/chat/completions", json=body, timeout=120).text).events
    before: list[str] = []
    with httpx.stream("POST", f"{proxy_url}/v1/chat/completions", json=body, timeout=60) as resp:
        stream_id = resp.headers["x-stream-id"]
        lines = resp.iter_lines()
        head = ""
        for line in lines:
            before.append(line)
            if line == "" and head.count('"content":"') >= 20:
                break
            head += line
        replicas = replica_pids()
        assert len(replicas) == 2, replicas
        serving = busiest(replicas)
        os.kill(serving, signal.SIGKILL)
    first = parse_sse("\n".join(before) + "\n").events
    last_id = first[-1].id

    def resumed() -> httpx.Response | None:
        r = httpx.get(f"{proxy_url}/v1/streams/{stream_id}", headers={"Last-Event-ID": last_id}, timeout=120)
        return r if r.status_code == 200 else None

    assert wait_for(lambda: resumed() is not None, timeout=30, interval=0.5)
    rest = parse_sse(resumed().text).events  # a replay from the same position: the answer is finished by now
    events = first + rest
    assert [e.data for e in events].count("[DONE]") == 1 and events[-1].data == "[DONE]"
    assert content(events) == content(whole)
    assert serving not in replica_pids(), "the answer was finished by the other replica"


def blocked_signals(pid: int) -> set[int]:
    """The signals `pid`'s main thread blocks, from the SigBlk mask in /proc."""
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("SigBlk:"))
    mask = int(line.split()[1], 16)
    return {n for n in range(1, 65) if mask >> (n - 1) & 1}


def test_the_local_cluster_starts_with_sigterm_blocked(monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: a SIGTERM to the whole process group (systemd stops a service so) reached the
    local cluster's GCS and raylet too; removing the application then waited a minute for the dead
    GCS and left the replicas and HAProxy running. What `ray.init` starts inherits the blocked
    SIGTERM and outlives it; the cluster is refused a start without it."""
    from streamchat.replicas import launch

    started: list[subprocess.Popen] = []
    monkeypatch.setattr(ray, "init", lambda **_: started.append(subprocess.Popen(["sleep", "30"])))
    monkeypatch.setenv("STREAMCHAT_TEST_MARK", "before")
    with pytest.raises(RuntimeError, match="SIGTERM blocked"):
        launch._start_local_cluster({})
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        launch._start_local_cluster({"STREAMCHAT_TEST_MARK": "for the cluster"})
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    (child,) = started
    try:
        assert os.environ["STREAMCHAT_TEST_MARK"] == "for the cluster"
        assert signal.SIGTERM in blocked_signals(child.pid)
        child.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(timeout=0.5)
    finally:
        child.kill()
        child.wait()


def process_tree(root: int) -> set[int]:
    """`root` and every process descending from it now."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(stat_fields(entry.name)[1])
            except (OSError, ValueError):
                continue
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return tree


def alive(pid: int) -> bool:
    try:
        return stat_fields(pid)[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
def test_a_sigterm_to_the_whole_group_stops_a_local_cluster_at_once_and_leaves_nothing(tmp_path: Path) -> None:
    """`serve --replicas 1` on a cluster of its own, stopped as systemd stops a service: SIGTERM to
    every process of its group. It exits 0 within the shutdown's own time (before the fix: after a
    minute), its port closes, and no process it started is left."""
    port = free_port()
    log_path = tmp_path / "serve.log"
    flags = ["--replicas", "1", "--host", "127.0.0.1", "--port", str(port), "--threads", "1", "--log-level", "warning"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(serve_cmd(*flags), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(proc, url, log_path)
        started = process_tree(proc.pid) - {proc.pid}
        assert len(started) >= 3, "the GCS, the raylet and the workers run under it"
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=40)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code == 0, log_path.read_text(errors="replace")[-3000:]
    assert wait_for(lambda: not any(alive(pid) for pid in started), 10), [p for p in started if alive(p)]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/health", timeout=2)
