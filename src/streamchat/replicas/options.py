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
