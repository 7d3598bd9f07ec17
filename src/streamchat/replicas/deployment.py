"""One replica: the whole streamchat app, with its own engine thread and model.

Ray Serve sends a replica no request before its constructor has returned, and the constructor
returns only once the model is loaded: a replica is ready when it can answer. After that Ray calls
`check_health` every few seconds and replaces a replica whose engine cannot serve.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.deployment import Application

from streamchat.api.app import create_app
from streamchat.api.state import ServerState
from streamchat.api.threads import in_passing_thread
from streamchat.config import Settings
from streamchat.engine.factory import build_engine
from streamchat.replicas.options import DEPLOYMENT_NAME, deployment_options, replica_settings
from streamchat.replicas.request_id import ProxyEchoesRequestId


@serve.ingress()
class StreamchatReplica:
    async def __init__(self, given: dict[str, Any]) -> None:
        settings = Settings(**given)
        built = await in_passing_thread(build_engine, settings)
        self._app = create_app(settings, built)
        self._app.add_middleware(ProxyEchoesRequestId)  # outermost: after the request log has echoed it
        self._state: ServerState = self._app.state.streamchat
        self._fatal: str | None = None
        self._state.on_fatal = self._on_fatal

    def __serve_build_asgi_app__(self) -> FastAPI:
        return self._app

    def _on_fatal(self, reason: str) -> None:
        self._fatal = reason

    def check_health(self) -> None:
        """Raising tells Ray Serve to replace this replica."""
        if self._fatal is not None:
            raise RuntimeError(self._fatal)
        engine = self._state.engine
        if engine is None or not engine.alive:
            raise RuntimeError("the engine has stopped")


def application(settings: Settings) -> Application:
    """The Ray Serve application for these settings: replicas of one deployment at route `/`."""
    deployment = serve.deployment(StreamchatReplica, name=DEPLOYMENT_NAME)
    return deployment.options(**deployment_options(settings)).bind(replica_settings(settings))
