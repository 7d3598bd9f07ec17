"""Requests too large to take, refused in the OpenAI error shape before they are read whole.

- a body over `--max-body-bytes` → 413, whether its `Content-Length` declares it or it arrives
  chunked (counted as it comes; FastAPI turns any error while it reads a body into a 400 of its
  own, so the 413 replaces whatever the app then answers);
- request headers over `MAX_HEADER_BYTES` in all → 431.

A URL longer than the HTTP parser takes (64 KiB) never reaches the app; `http_protocol.py` answers
it with a 414 in the same shape.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamchat.api.errors import error_body

MAX_HEADER_BYTES = 64 * 1024


class SizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = scope.get("headers") or []
        if sum(len(k) + len(v) + 4 for k, v in headers) > MAX_HEADER_BYTES:
            return await refuse(send, 431, f"request headers larger than {MAX_HEADER_BYTES} bytes")
        declared = dict(headers).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return await self._too_large(send)
        seen = 0
        exceeded = refused = False

        async def counting_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    exceeded = True
                    raise _TooLargeError
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal refused
            if exceeded:  # the app answered its own error for the body it could not read
                if not refused:
                    refused = True
                    await self._too_large(send)
                return
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _TooLargeError:
            if not refused:
                await self._too_large(send)

    async def _too_large(self, send: Send) -> None:
        await refuse(send, 413, f"request body larger than {self.max_body_bytes} bytes")


class _TooLargeError(Exception):
    pass


async def refuse(send: Send, status: int, message: str) -> None:
    body = json.dumps(error_body(status, message)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
