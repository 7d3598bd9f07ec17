"""One log line per request, tied together by a request id.

The id comes from the client's `X-Request-Id` when it is a sane token (so a proxy's id carries
through), else a new one; it is sent back in the response's `X-Request-Id` and is visible to the
code that handles the request through `REQUEST_ID` (stream producers are tasks created inside the
handler, so they inherit it). Lines are `key=value`, one per request, written when the response has
ended: for a stream, that is when the stream ends.

Prompts and answers are private: they are logged only with `--log-prompts`, as separate lines
carrying the same request id.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextvars import ContextVar

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamchat.engine.types import Delta

log = logging.getLogger("streamchat.access")
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)

_SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_MAX_LOGGED_BODY = 64 * 1024


class RequestLogMiddleware:
    def __init__(self, app: ASGIApp, log_prompts: bool = False) -> None:
        self.app = app
        self.log_prompts = log_prompts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _incoming_id(scope) or uuid.uuid4().hex
        token = REQUEST_ID.set(rid)
        start = time.perf_counter()
        status = 0
        body = bytearray()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("X-Request-Id", rid)
            await send(message)

        async def receive_logged() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) < _MAX_LOGGED_BODY:
                body.extend(message.get("body", b"")[: _MAX_LOGGED_BODY - len(body)])
            return message

        try:
            await self.app(scope, receive_logged if self.log_prompts else receive, send_with_id)
        except BaseException:
            status = status or 500
            raise
        finally:
            fields = {
                "request_id": rid,
                "method": scope.get("method", ""),
                "path": scope.get("path", ""),
                "status": status,
                "duration_ms": round((time.perf_counter() - start) * 1000, 1),
            }
            if self.log_prompts and body:
                fields["body"] = body.decode("utf-8", errors="replace")
            log.info(format_fields(fields))
            REQUEST_ID.reset(token)


async def log_answer(deltas: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
    """Log the whole answer once it ends (only installed with `--log-prompts`)."""
    parts: list[str] = []
    try:
        async for d in deltas:
            parts.append(d.text)
            if d.finished:
                reason = d.finish_reason.value if d.finish_reason else ""
                log.info(format_fields({"request_id": REQUEST_ID.get(), "finish": reason, "answer": "".join(parts)}))
            yield d
    finally:
        await deltas.aclose()  # type: ignore[attr-defined]


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate = value.decode("latin-1").strip()
            return candidate if _SANE_ID.fullmatch(candidate) else None
    return None


def format_fields(fields: dict[str, object]) -> str:
    """`key=value` pairs; values with spaces, quotes or line breaks are JSON-quoted, so a line stays one line."""
    out = []
    for key, value in fields.items():
        text = "" if value is None else str(value)
        if text == "" or re.search(r"[\s\"=\\]", text) or not text.isprintable():
            text = json.dumps(text, ensure_ascii=False)
        out.append(f"{key}={text}")
    return " ".join(out)
