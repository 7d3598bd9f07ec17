"""The `serve run` builder and the Serve config shipped in deploy/: valid for Ray, same settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray.serve", reason="ray[serve] is not installed (make test installs it)")

from ray.serve.schema import ServeDeploySchema  # noqa: E402

from streamchat.replicas.app import build  # noqa: E402
from streamchat.replicas.options import APP_NAME, DEPLOYMENT_NAME  # noqa: E402

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "ray-serve.yaml"


def test_the_shipped_serve_config_is_valid_and_builds_two_replicas_on_redis() -> None:
    config = ServeDeploySchema.model_validate(yaml.safe_load(CONFIG.read_text()))
    (app,) = config.applications
    assert (app.name, app.route_prefix, app.import_path) == (APP_NAME, "/", "streamchat.replicas.app:build")
    built = build(app.args)
    deployment = built._bound_deployment  # what Ray Serve deploys
    assert deployment.name == DEPLOYMENT_NAME and deployment.num_replicas == app.args["replicas"]
    assert deployment.max_ongoing_requests == app.args["max_num_seqs"] + 256  # + the default --max-queue
    (given,) = built._bound_deployment.init_args
    assert given["stream_store"].startswith("redis://")


def test_the_builder_takes_flag_names_too_and_refuses_what_the_cli_refuses() -> None:
    assert build({"max-num-seqs": "4"})._bound_deployment.init_args == ({"max_num_seqs": 4},)
    with pytest.raises(ValueError, match="needs --stream-store redis://"):
        build({"replicas": "2"})
