"""Running the app under uvicorn, with a shutdown that is designed rather than assumed.

On SIGTERM or SIGINT the server stops taking requests (503 with `Retry-After`), lets streams in
flight finish for up to `--shutdown-grace` seconds, then ends the rest with an `event: error`
(code `server_shutdown`: reconnect elsewhere or later) and `[DONE]`, and exits 0. uvicorn's own
handler would re-raise the signal after its shutdown so the process dies by SIGTERM (-15); ours
does not. If the engine thread dies the process exits 1, for its supervisor to restart it.
A second signal during the drain skips the rest of the grace period.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Generator
from contextlib import contextmanager
from types import FrameType

import uvicorn

from streamchat.api.app import create_app
from streamchat.api.state import ServerState
from streamchat.config import Settings
from streamchat.http_protocol import ShapedErrorsProtocol

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: ServerState, grace: float) -> None:
        super().__init__(config)
        self.state = state
        self.grace = grace
        self.exit_code = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain: asyncio.Task | None = None

    async def serve(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
        self._loop = asyncio.get_running_loop()
        self.state.on_fatal = self.fatal
        await super().serve(sockets)

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def handle_exit(self, _sig: int, _frame: FrameType | None) -> None:
        if self._drain is not None or self._loop is None:
            self.should_exit = True  # a second signal: stop waiting
            return
        self._loop.call_soon_threadsafe(self._start_drain)

    def fatal(self, reason: str) -> None:
        """Called from any thread when the engine can no longer serve."""
        log.error("exiting: %s", reason)
        self.exit_code = 1
        self.should_exit = True

    def _start_drain(self) -> None:
        if self._drain is None:
            self._drain = asyncio.create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        self.state.draining = True
        log.info("shutting down: refusing new requests, %.0f s for streams in flight", self.grace)
        deadline = time.monotonic() + self.grace
        while self.state.busy and time.monotonic() < deadline and not self.should_exit:
            await asyncio.sleep(0.1)
        if self.state.busy:
            log.info("grace period over: closing the streams still open")
        await self.state.streams.shutdown()
        self.should_exit = True


def serve(settings: Settings) -> int:
    app = create_app(settings)
    state: ServerState = app.state.streamchat
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    print(
        f"streamchat: chat page at http://{host}:{settings.port}/ (the model loads in the background; "
        "GET /health turns 200 when ready)",
        flush=True,
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # streamchat.access writes one line per request, with its id and timings
        timeout_graceful_shutdown=5,
        http=ShapedErrorsProtocol,  # unparseable requests get our error shape, over-long URLs a 414
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
    server = DrainingServer(config, state, settings.shutdown_grace)
    server.run()
    return server.exit_code
