"""The request log: one key=value line per request with its id, and no prompt unless asked for."""

from __future__ import annotations

import logging

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from streamchat.api.request_log import REQUEST_ID, RequestLogMiddleware, format_fields, log_answer
from streamchat.engine.types import Delta, FinishReason

SECRET = "my very private prompt"


async def _echo(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"seen_id": REQUEST_ID.get()}, status_code=201)


def _client(log_prompts: bool) -> httpx.AsyncClient:
    app = RequestLogMiddleware(Starlette(routes=[Route("/echo", _echo, methods=["POST"])]), log_prompts=log_prompts)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_one_line_per_request_with_its_id(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "streamchat.access")
    async with _client(log_prompts=False) as client:
        resp = await client.post("/echo", json={"prompt": SECRET}, headers={"X-Request-Id": "abc-1"})
    assert resp.headers["x-request-id"] == "abc-1"
    assert resp.json() == {"seen_id": "abc-1"}  # the handler sees the same id
    lines = [r.getMessage() for r in caplog.records if r.name == "streamchat.access"]
    assert len(lines) == 1
    line = lines[0]
    for part in ("request_id=abc-1", "method=POST", "path=/echo", "status=201", "duration_ms="):
        assert part in line
    assert "private" not in line


async def test_prompts_are_logged_only_when_asked_for(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "streamchat.access")
    async with _client(log_prompts=True) as client:
        await client.post("/echo", json={"prompt": SECRET})
    (line,) = [r.getMessage() for r in caplog.records if r.name == "streamchat.access"]
    assert SECRET in line
    assert "\n" not in line


async def test_answers_are_logged_with_the_request_id(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "streamchat.access")

    async def deltas():
        yield Delta("Hello ")
        yield Delta("world\nbye", finish_reason=FinishReason.STOP)

    token = REQUEST_ID.set("rid-7")
    try:
        texts = [d.text async for d in log_answer(deltas())]
    finally:
        REQUEST_ID.reset(token)
    assert texts == ["Hello ", "world\nbye"]
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == 'request_id=rid-7 finish=stop answer="Hello world\\nbye"'


def test_values_that_could_break_a_line_are_quoted() -> None:
    assert format_fields({"a": "x", "b": 'say "hi" now', "c": None, "d": 3}) == 'a=x b="say \\"hi\\" now" c="" d=3'
