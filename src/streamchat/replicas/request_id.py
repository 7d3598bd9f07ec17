"""One `X-Request-Id` per response behind Ray Serve's proxy.

The proxy puts a request id in every request it forwards (the client's own when it sent one), and
appends that id to the response; the app's request log echoes the same id, so without this the
client would read it twice ("id, id"). The log keeps using the id; only the echo is dropped.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ProxyEchoesRequestId:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_without_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                del MutableHeaders(scope=message)["X-Request-Id"]
            await send(message)

        await self.app(scope, receive, send_without_id)
