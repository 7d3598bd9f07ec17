"""Settings → Ray Serve options, and the combinations refused before any cluster starts."""

from __future__ import annotations

import pytest

from streamchat.config import Settings
from streamchat.replicas.options import (
    deployment_options,
    ingress_environment,
    replica_settings,
    replicas_refusal,
    uses_replicas,
)

REDIS = "redis://127.0.0.1:6379/0"


def test_a_fixed_number_of_replicas_each_taking_what_our_admission_takes() -> None:
    s = Settings(replicas=3, stream_store=REDIS, max_num_seqs=8, max_queue=24, shutdown_grace=12, threads=2)
    options = deployment_options(s)
    assert options["num_replicas"] == 3 and "autoscaling_config" not in options
    assert options["max_ongoing_requests"] == 32
    assert options["graceful_shutdown_timeout_s"] == 12
    assert options["ray_actor_options"] == {"num_cpus": 2}


def test_autoscaling_bounds_map_onto_ray_serves_autoscaling_config() -> None:
    s = Settings(replicas=2, min_replicas=1, max_replicas=4, target_ongoing_requests=6, stream_store=REDIS)
    options = deployment_options(s)
    assert "num_replicas" not in options
    assert options["autoscaling_config"] == {
        "min_replicas": 1,
        "max_replicas": 4,
        "initial_replicas": 2,
        "target_ongoing_requests": 6,
    }
    default_target = deployment_options(Settings(max_replicas=3, stream_store=REDIS, max_num_seqs=16))
    assert default_target["autoscaling_config"]["target_ongoing_requests"] == 16  # a full batch per replica


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"replicas": 2}, "--replicas 2 needs --stream-store redis://"),
        ({"max_replicas": 3}, "--max-replicas 3 needs --stream-store redis://"),
        ({"replicas": 1, "target_ongoing_requests": 4}, "give --min-replicas or --max-replicas"),
        ({"min_replicas": 3, "max_replicas": 2, "stream_store": REDIS}, "--min-replicas 3 is more than"),
        ({"replicas": 5, "max_replicas": 4, "stream_store": REDIS}, "--replicas 5 (the replicas to start with)"),
    ],
)
def test_refused_combinations_say_why(given: dict, says: str) -> None:
    refused = replicas_refusal(Settings(**given))
    assert refused is not None and says in refused


def test_one_replica_may_keep_streams_in_memory() -> None:
    assert replicas_refusal(Settings(replicas=1)) is None
    assert uses_replicas(Settings(replicas=1)) and not uses_replicas(Settings())


def test_a_replica_gets_only_the_settings_given_so_machine_defaults_are_its_own() -> None:
    given = replica_settings(Settings(replicas=2, stream_store=REDIS, max_num_seqs=4))
    assert given == {"replicas": 2, "stream_store": REDIS, "max_num_seqs": 4}
    assert "cache_dir" not in given


def test_the_ingress_is_haproxy_unless_rays_python_proxy_is_asked_for() -> None:
    assert ingress_environment(Settings(replicas=1)) == {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    }
    assert set(ingress_environment(Settings(replicas=1, ray_ingress="proxy")).values()) == {"0"}
