"""Request bodies are JSON, whatever the client says they are.

`curl -d '{...}'` sends `Content-Type: application/x-www-form-urlencoded`, and some clients send
no content type at all. FastAPI would then hand the route raw bytes and answer with a validation
error quoting them. Every route that takes a body here takes JSON, so, as llama.cpp's server does,
a body is read as JSON whatever its declared type; one that is not JSON gets a plain 400.

Browsers are the exception: a page may send `text/plain` or a form to another site without a CORS
preflight, so reading such a body as JSON would let any site start generations and bypass
`--cors-origins`. A request that carries an `Origin` header keeps its declared type.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

_JSON = b"application/json"


class JSONBodyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") in ("POST", "PUT", "PATCH"):
            given = dict(scope.get("headers") or [])
            headers = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-type"]
            declared = given.get(b"content-type", b"")
            is_json = declared.split(b";")[0].strip().lower().endswith((b"/json", b"+json"))
            if not is_json and b"origin" not in given:
                scope = {**scope, "headers": [*headers, (b"content-type", _JSON)]}
        await self.app(scope, receive, send)
