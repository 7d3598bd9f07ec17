"""A newline-delimited JSON stream (`application/x-ndjson`), as Ollama's clients read it.

Each object is one line, handed to the server as its own body chunk the moment it is produced:
nothing is buffered. The response watches for the client leaving whatever the server's ASGI
version (Starlette only watches below 2.4) and, however it ends, closes the object iterator, which
closes the delta iterator and so aborts the request in the engine.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from streamchat.sse.framing import to_json
from streamchat.sse.response import STREAM_HEADERS

MEDIA_TYPE = "application/x-ndjson"


def line(obj: dict[str, Any]) -> bytes:
    """One object as one NDJSON line: compact, UTF-8 as is (no \\u escapes), ending in a newline."""
    return to_json(obj).encode() + b"\n"


class NDJSONResponse(StreamingResponse):
    def __init__(self, objects: AsyncGenerator[dict[str, Any], None]) -> None:
        self.objects = objects
        super().__init__(self._lines(), headers=STREAM_HEADERS, media_type=MEDIA_TYPE)

    async def _lines(self) -> AsyncGenerator[bytes, None]:
        async for obj in self.objects:
            yield line(obj)

    async def __call__(self, _scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:

                async def watch() -> None:
                    await self.listen_for_disconnect(receive)
                    group.cancel_scope.cancel()

                group.start_soon(watch)
                await self.stream_response(send)
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]
                await self.objects.aclose()
