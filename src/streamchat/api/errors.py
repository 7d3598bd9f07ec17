"""Errors in the shape each protocol's clients parse; OpenAI's `{"error": {message, type, param, code}}`
everywhere but on the Anthropic and Ollama routes.

Handlers raise `APIError`; FastAPI's validation errors and malformed JSON are turned into the same
shape with status 400 and the offending field named in `param`, so no client ever sees a 422 or
a 500 for bad input. The route decides the shape: `/v1/messages…` answers as Anthropic does
(`{"type": "error", "error": {type, message}}`), `/api/…` as Ollama does (`{"error": message}`).
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from streamchat.sse.framing import to_json
from streamchat.streams.log import StreamEvent, StreamStoreUnavailableError

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.status, self.message, self.param, self.code)


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {
        "error": {"message": message, "type": _TYPES.get(status, "invalid_request_error"), "param": param, "code": code}
    }


_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
}


def anthropic_error_body(status: int, message: str) -> dict:
    return {
        "type": "error",
        "error": {"type": _ANTHROPIC_TYPES.get(status, "invalid_request_error"), "message": message},
    }


def shaped_error(
    request: Request, status: int, message: str, param: str | None = None, code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:  # fmt: skip
    """The error response in the shape of the protocol `request` speaks."""
    path = request.url.path
    if path.startswith("/v1/messages"):
        body = anthropic_error_body(status, message)
    elif path.startswith("/api/"):
        body = {"error": message}
    else:
        body = error_body(status, message, param, code)
    return JSONResponse(body, status_code=status, headers=headers)


def generation_failed_event(reason: str) -> StreamEvent:
    """The `event: error` a stream sends when generation fails after the response has started."""
    return StreamEvent("error", to_json(error_body(500, f"generation failed: {reason}", code="generation_failed")))


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    if not errors:
        return "invalid request", None
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return f"request body is not valid JSON: {first.get('ctx', {}).get('error', first.get('msg'))}", None
    param = ".".join(loc) or None
    where = f"'{param}': " if param else ""
    msg = first.get("msg", "invalid value")
    if first.get("type") == "missing":
        return f"{where}this field is required", param
    extra = (
        f" (got {json.dumps(first['input'], ensure_ascii=False, default=str)[:80]})"
        if "input" in first and first.get("type") != "missing"
        else ""
    )
    return f"{where}{msg}{extra}", param


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return shaped_error(request, exc.status, exc.message, exc.param, exc.code, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return shaped_error(request, 400, message, param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return shaped_error(request, exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(StreamStoreUnavailableError)
    async def _store_down(request: Request, exc: StreamStoreUnavailableError) -> JSONResponse:
        return shaped_error(request, 503, str(exc), code="stream_store_unavailable", headers={"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, _exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return shaped_error(request, 500, "internal server error")
