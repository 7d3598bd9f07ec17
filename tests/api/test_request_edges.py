"""Edges of the request path, in process: metric labels, browsers' bodies, throttles, a dying engine."""

from __future__ import annotations

import pytest

from streamchat.config import Settings
from streamchat.engine.async_engine import EngineDeadError
from tests.api.inprocess import InProcess, StartInProcess
from tests.support import assert_error

CHAT = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
PREFLIGHT = {"Origin": "https://page.example", "Access-Control-Request-Method": "POST"}


async def test_requests_that_match_no_route_share_one_metric_label(inprocess: InProcess) -> None:
    """Regression: a preflight or a refused body on a made-up path became a Prometheus series of its
    own, so anyone could grow the metrics without bound."""
    for i in range(5):
        await inprocess.client.options(f"/made-up-{i}", headers=PREFLIGHT)
        await inprocess.client.post(f"/big-{i}", headers={"Content-Length": "999999999"})
    metrics = (await inprocess.client.get("/metrics")).text
    assert "made-up" not in metrics and "big-" not in metrics
    assert 'route="unmatched"' in metrics


async def test_a_browsers_text_plain_body_is_not_read_as_json(inprocess: InProcess) -> None:
    """Regression: any page could POST `text/plain` JSON without a CORS preflight and start a generation."""
    body = b'{"messages":[{"role":"user","content":"Hi"}],"max_tokens":2}'
    cross_site = {"Content-Type": "text/plain", "Origin": "https://elsewhere.example"}
    assert_error(await inprocess.client.post("/v1/chat/completions", content=body, headers=cross_site), 400)
    assert inprocess.fed_text() == ""
    plain = await inprocess.client.post("/v1/chat/completions", content=body, headers={"Content-Type": "text/plain"})
    assert plain.status_code == 200  # curl and scripts send no Origin


async def test_wrong_keys_never_lock_a_probe_out_of_health(start_inprocess: StartInProcess) -> None:
    settings = Settings(api_key=["right"], auth_failures_per_minute=2, public_health=False)
    async with start_inprocess(settings) as server:
        for _ in range(3):
            await server.client.get("/v1/models", headers={"Authorization": "Bearer guess"})
        right = {"Authorization": "Bearer right"}
        assert (await server.client.get("/v1/models", headers=right)).status_code == 429
        assert (await server.client.get("/health", headers=right)).status_code == 200


async def test_the_throttle_can_be_switched_off(start_inprocess: StartInProcess) -> None:
    async with start_inprocess(Settings(api_key=["right"], auth_failures_per_minute=None)) as server:
        wrong = {"Authorization": "Bearer x"}
        statuses = {(await server.client.get("/v1/models", headers=wrong)).status_code for _ in range(30)}
        assert statuses == {401}


async def test_an_engine_that_dies_after_readiness_is_a_503(
    inprocess: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: the engine stopping between the readiness check and the submission gave a bare 500."""

    def dead(_request: object) -> None:
        raise EngineDeadError("the engine is not running")

    monkeypatch.setattr(inprocess.engine, "generate", dead)
    r = await inprocess.client.post("/v1/chat/completions", json=CHAT)
    assert assert_error(r, 503)["code"] == "engine_dead"
