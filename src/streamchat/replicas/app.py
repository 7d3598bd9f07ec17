"""The application builder for Ray's own tools: `serve run streamchat.replicas.app:build key=value …`,
or `import_path: streamchat.replicas.app:build` with `args:` in a Serve config (deploy/ray-serve.yaml).

`args` takes the same settings as `streamchat serve`'s flags, with underscores (`max_num_seqs`,
`stream_store`, `replicas`, `max_replicas`…); Ray's config decides the proxy's host and port.
"""

from __future__ import annotations

from typing import Any

from ray.serve.deployment import Application

from streamchat.config import Settings
from streamchat.replicas.deployment import application
from streamchat.replicas.options import replicas_refusal


def build(args: dict[str, Any]) -> Application:
    settings = Settings(**{key.replace("-", "_"): value for key, value in args.items()})
    refused = replicas_refusal(settings)
    if refused is not None:
        raise ValueError(refused)
    return application(settings)
