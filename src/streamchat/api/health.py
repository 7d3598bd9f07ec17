"""What operators and browsers read without a model request: `/health` for load balancers,
`/metrics` for Prometheus, and the chat page at `/`."""

from __future__ import annotations

import os
from dataclasses import asdict
from importlib.resources import files

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from streamchat.api.auth import health_access, metrics_access
from streamchat.api.model_slots import ModelSlot
from streamchat.api.state import State

router = APIRouter()


@router.get("/health", dependencies=[Depends(health_access)])
async def health(state: State) -> JSONResponse:
    if state.draining:  # a load balancer stops sending traffic here while streams in flight finish
        return JSONResponse({"status": "draining"}, status_code=503, headers={"Retry-After": "5"})
    if state.load_error:
        return JSONResponse({"status": "error", "error": state.load_error}, status_code=503)
    if state.engine is None or state.model is None:
        return JSONResponse({"status": "loading"}, status_code=503)
    if not state.engine.alive:
        return JSONResponse({"status": "error", "error": "engine stopped"}, status_code=503)
    snap = state.engine.snapshot()
    body = {
        "status": "ok",
        "model": state.model.name,
        "pid": os.getpid(),  # which process answered: with replicas, which one
        "running": snap.running,
        "waiting": snap.waiting,
        "finished": snap.counters.finished,
        "aborted": snap.counters.aborted,
        "streams": asdict(state.streams.counters),
    }
    if state.extra_models is not None:
        body["models"] = {name: _slot_health(slot) for name, slot in state.extra_models.slots.items()}
    return JSONResponse(body)


def _slot_health(slot: ModelSlot) -> dict:
    """A model beside the default one: whether it is loaded, and its load when it is."""
    out: dict = {"status": slot.status}
    if slot.error:
        out["error"] = slot.error
    if slot.engine is not None:
        snap = slot.engine.snapshot()
        out |= {"running": snap.running, "waiting": snap.waiting, "finished": snap.counters.finished}
    return out


@router.get("/metrics", dependencies=[Depends(metrics_access)], response_class=Response)
async def metrics(state: State) -> Response:
    """Prometheus text format 0.0.4: every scraper reads it, and our names need nothing newer."""
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_PLAIN_0_0_4)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def chat_page() -> HTMLResponse:
    return HTMLResponse(files("streamchat.web").joinpath("index.html").read_text(encoding="utf-8"))
