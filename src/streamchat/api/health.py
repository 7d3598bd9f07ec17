"""`/health` for load balancers and the chat page at `/`."""

from __future__ import annotations

from dataclasses import asdict
from importlib.resources import files

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, JSONResponse

from streamchat.api.auth import health_access
from streamchat.api.state import State

router = APIRouter()


@router.get("/health", dependencies=[Depends(health_access)])
async def health(state: State) -> JSONResponse:
    if state.load_error:
        return JSONResponse({"status": "error", "error": state.load_error}, status_code=503)
    if state.engine is None or state.model is None:
        return JSONResponse({"status": "loading"}, status_code=503)
    if not state.engine.alive:
        return JSONResponse({"status": "error", "error": "engine stopped"}, status_code=503)
    core = state.engine.engine
    return JSONResponse(
        {
            "status": "ok",
            "model": state.model.name,
            "running": core.num_running,
            "waiting": state.engine.num_waiting,
            "finished": core.stats.finished,
            "aborted": core.stats.aborted,
            "streams": asdict(state.streams.counters),
        }
    )


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def chat_page() -> HTMLResponse:
    return HTMLResponse(files("streamchat.web").joinpath("index.html").read_text(encoding="utf-8"))
