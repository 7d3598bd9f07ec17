"""What the client sees on the wire, measured in a pure ASGI middleware around `send`.

Timing inside the handlers would miss what happens between the event loop and the socket: the
stream log, sse-starlette's task group, the server's flow control. This middleware times the
moment the server has taken each body chunk of a streamed response, SSE or NDJSON (after `send`
returns, so a client that reads slowly and makes the server wait shows up as a gap), and counts
every request by method, route template and status.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamchat.api.metrics import Metrics


class WireMetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        last: float | None = None
        started = streaming = False

        async def timed_send(message: Message) -> None:
            nonlocal last, started, streaming
            if message["type"] == "http.response.start":
                started = True
                streaming = _is_event_stream(message.get("headers", ()))
                self._count(scope, message["status"])
            await send(message)
            if streaming and message["type"] == "http.response.body" and message.get("body"):
                now = time.perf_counter()
                if last is None:
                    self.metrics.wire_first_byte.observe(now - start)
                else:
                    self.metrics.wire_gap.observe(now - last)
                last = now

        try:
            await self.app(scope, receive, timed_send)
        except BaseException:
            if not started:  # the outermost error middleware answers 500 on our behalf
                self._count(scope, 500)
            raise

    def _count(self, scope: Scope, status: int) -> None:
        route = getattr(scope.get("route"), "path", None)  # templates only: ids would explode the label set
        path = route or ("/openapi.json" if scope.get("path") == "/openapi.json" else "unmatched")
        self.metrics.requests.labels(scope.get("method", ""), path, str(status)).inc()


def _is_event_stream(headers: object) -> bool:
    for name, value in headers:  # type: ignore[attr-defined]
        if name.lower() == b"content-type":
            return value.split(b";")[0].strip().lower() in (b"text/event-stream", b"application/x-ndjson")
    return False
