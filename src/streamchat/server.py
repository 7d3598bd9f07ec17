"""Running the app under uvicorn."""

from __future__ import annotations

import uvicorn

from streamchat.api.app import create_app
from streamchat.config import Settings


def serve(settings: Settings) -> int:
    app = create_app(settings)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    print(
        f"streamchat: chat page at http://{host}:{settings.port}/ (the model loads in the background; "
        f"GET /health turns 200 when ready)",
        flush=True,
    )
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level, timeout_graceful_shutdown=5
    )
    uvicorn.Server(config).run()
    return 0
