"""`streamchat serve --replicas N`: the app as a Ray Serve application, until SIGTERM or SIGINT.

It joins `--ray-address` or starts a local cluster, starts Ray Serve's HTTP ingress on
`--host/--port` (HAProxy in front of replicas that serve HTTP themselves, or Ray's Python proxy:
`--ray-ingress`, `options.ingress_environment`), deploys the replicas and waits until every one
has loaded its model. On the first SIGTERM or SIGINT it removes the application (Ray lets each
replica finish its streams for `--shutdown-grace`), then stops Serve and the local cluster it
started; on a cluster it joined it stops Serve only if no other application is left there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path
from types import FrameType

from streamchat.config import Settings
from streamchat.replicas.options import (
    APP_NAME,
    autoscaled,
    ingress_environment,
    local_haproxy_environment,
    replica_bounds,
    replicas_refusal,
)

log = logging.getLogger(__name__)


class _Stop(Exception):
    """Raised in the main thread by the signal handler, to leave whatever Ray call is waiting."""


def _raise_stop(signum: int, _frame: FrameType | None) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):  # a second signal while stopping: ignored, not a traceback
        signal.signal(sig, signal.SIG_IGN)
    raise _Stop(signal.Signals(signum).name)


def serve_replicas(settings: Settings) -> int:
    refused = replicas_refusal(settings)
    if refused is not None:
        print(f"streamchat: {refused}", file=sys.stderr)
        return 2
    # SIGTERM held back in this thread until the stop handlers are in place, and in every process
    # started meanwhile: the local cluster's (see _start_local_cluster). For this process it is best
    # effort: a thread that was running before (numpy's OpenBLAS pool) may still take it.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    local = settings.ray_address is None
    haproxy_folder = _haproxy_folder(settings) if local else None
    serving = False
    try:
        import ray
        from ray import serve

        from streamchat.replicas.deployment import application

        if local:
            _start_local_cluster(_local_environment(settings, haproxy_folder))
        else:
            ray.init(address=settings.ray_address, logging_level=logging.WARNING)
        # after ray.init: a Python handler found there makes Ray wrap it in one that kills the process
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _raise_stop)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a SIGTERM held back here raises _Stop
        serving = True
        serve.start(http_options={"host": settings.host, "port": settings.port})
        log.info("deploying; each replica is ready once its model has loaded")
        serve.run(
            application(settings),
            name=APP_NAME,
            route_prefix="/",
            logging_config={"log_level": settings.log_level.upper(), "enable_access_log": False},
        )
        print(f"streamchat: {_describe(settings)} ready at http://{_host(settings)}:{settings.port}/", flush=True)
        threading.Event().wait()
        return 0
    except _Stop as stop:
        log.info("%s: stopping the replicas", stop)
        return 0
    except Exception as exc:  # a replica that cannot start, a cluster that cannot be reached
        log.error("Ray Serve failed: %s", exc)
        return 1
    finally:
        try:
            _stop(local, serving)
        finally:
            if haproxy_folder is not None:
                _remove_haproxy(haproxy_folder)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _start_local_cluster(environment: dict[str, str]) -> None:
    """A Ray cluster of this machine, whose processes inherit `environment` and the caller's
    signal mask, in which SIGTERM is blocked.

    Why blocked: the cluster's GCS and raylet share this process's group, so a SIGTERM sent to the
    whole group (systemd's default on stop) would kill them at the instant this process starts
    removing the application; removing it would then wait a minute for a GCS that is gone and leave
    the replicas and HAProxy running, holding the port. Blocked, they outlive that signal, and so do
    the workers and agents the raylet starts (they inherit its mask; Serve stops its replicas and
    HAProxy by other means). `ray.shutdown()` ends them: a SIGTERM, then SIGKILL after a second of
    grace each, some 4 s in all. SIGINT, a terminal's Ctrl-C to the group, Ray already blocks there.
    """
    import ray

    if signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, set()):
        raise RuntimeError("the local cluster must start with SIGTERM blocked")
    os.environ.update(environment)
    ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)


def _local_environment(settings: Settings, haproxy_folder: str | None) -> dict[str, str]:
    environment = ingress_environment(settings)
    if haproxy_folder is not None:
        environment.update(local_haproxy_environment(haproxy_folder, _free_port(), _free_port()))
    return environment


def _haproxy_folder(settings: Settings) -> str | None:
    """A folder of the local cluster's HAProxy alone. Short: Ray puts its sockets two levels down
    (a 64-character subfolder), and HAProxy refuses a socket path over 97 bytes."""
    return tempfile.mkdtemp(prefix="schp-", dir="/tmp") if settings.ray_ingress == "haproxy" else None


def _remove_haproxy(folder: str) -> None:
    """Serve stops its HAProxy when it shuts down cleanly; one whose manager was killed first would
    be left running, holding the port: stop whatever still runs from our folder, then remove it."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if folder.encode() in (entry / "cmdline").read_bytes():
                    os.kill(int(entry.name), signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(local: bool, serving: bool) -> None:
    """Remove the application and leave Ray; `serving`: Serve may have been started (else only
    the connection to Ray, or the local cluster, is ended)."""
    import ray
    from ray import serve

    try:
        if serving:
            serve.delete(APP_NAME)
            if local or not serve.status().applications:
                serve.shutdown()
    finally:
        ray.shutdown()


def _describe(s: Settings) -> str:
    if autoscaled(s):
        low, high = replica_bounds(s)
        return f"replicas (autoscaled {low}..{high})"
    return f"{s.replicas or 1} replica(s)"


def _host(s: Settings) -> str:
    return f"[{s.host}]" if ":" in s.host else s.host
