"""CORS: any origin by default, without credentials; a configured list is honoured."""

from __future__ import annotations

import httpx
import pytest

from streamchat.api.app import create_app
from streamchat.config import Settings

ORIGIN = "http://page.example"


def test_default_allows_any_origin(http: httpx.Client) -> None:
    r = http.get("/health", headers={"Origin": ORIGIN})
    assert r.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in r.headers


def test_default_preflight_for_a_streaming_post(http: httpx.Client) -> None:
    headers = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, authorization",
    }
    r = http.options("/v1/chat/completions", headers=headers)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "*"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert {"content-type", "authorization"} <= {
        h.strip() for h in r.headers["access-control-allow-headers"].split(",")
    }


def test_stream_response_carries_cors_headers(http: httpx.Client) -> None:
    body = {"prompt": "Hi", "max_tokens": 2, "temperature": 0, "stream": True}
    r = http.post("/v1/completions", json=body, headers={"Origin": ORIGIN})
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["access-control-allow-origin"] == "*"
    assert "x-stream-id" in r.headers["access-control-expose-headers"].lower()


@pytest.fixture
def configured() -> httpx.AsyncClient:
    """The app alone (no model is loaded: CORS answers before any route needs it)."""
    app = create_app(Settings(cors_origins=["https://allowed.example"]))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_configured_origin_is_allowed(configured: httpx.AsyncClient) -> None:
    async with configured as client:
        r = await client.get("/health", headers={"Origin": "https://allowed.example"})
    assert r.headers["access-control-allow-origin"] == "https://allowed.example"


async def test_other_origins_are_refused(configured: httpx.AsyncClient) -> None:
    async with configured as client:
        r = await client.get("/health", headers={"Origin": ORIGIN})
        preflight = await client.options(
            "/v1/completions", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
        )
    assert "access-control-allow-origin" not in r.headers
    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers


def test_origins_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAMCHAT_CORS_ORIGINS", "https://a.example, https://b.example")
    assert Settings().cors_origins == ["https://a.example", "https://b.example"]
