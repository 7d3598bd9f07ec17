"""The seed's protocol (the blog post's `/stream`) and ChatGLM-6B's `api.py`, byte for byte.

- `POST /stream` `{prompt, history, max_length?, top_p?, temperature?}` → events
  `data: {"id": 0, "time": "%Y-%m-%d %H:%M:%S", "text": "…"}` then `data: [DONE]`.
- `GET /stream?prompt=…&history=[…]` → the same stream, for the browser's `EventSource`.
- `POST /` → `{"response", "history", "status": 200, "time"}`, not streamed.

`max_length` keeps ChatGLM's meaning: prompt and answer together.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ConfigDict, Field, field_validator

from streamchat.api.auth import Owner, require_key
from streamchat.api.disconnect import ClientDisconnectedError, disconnected_response, unless_disconnected
from streamchat.api.errors import APIError, generation_failed_event
from streamchat.api.ready import Ready, ReadyServer, ready_now
from streamchat.api.resume import resume_point, resume_response
from streamchat.api.state import State
from streamchat.api.submission import admit, stream_response, submit
from streamchat.api.text_repair import RepairedModel
from streamchat.api.token_limits import check_max_tokens, check_prompt_tokens
from streamchat.chat.prompt import PromptTooLongError, fit_history
from streamchat.engine.types import Delta, GenerationRequest, SamplingParams
from streamchat.sse.framing import DONE, to_json
from streamchat.streams.log import StreamEvent

log = logging.getLogger(__name__)
router = APIRouter(dependencies=[Depends(require_key)])

Round = Annotated[list[str], Field(min_length=2, max_length=2)]


class GLMRequest(RepairedModel):
    model_config = ConfigDict(extra="ignore")

    prompt: str = Field(..., min_length=1)
    history: list[Round] = Field(default_factory=list)
    max_length: int | None = Field(None, ge=2)
    top_p: float = Field(0.7, gt=0.0, le=1.0)
    temperature: float = Field(0.95, ge=0.0, le=2.0)
    resumable: bool = Field(True, description="keep generating for a while after a disconnect, for resumption")

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("prompt must not be blank")
        return v

    @field_validator("history", mode="before")
    @classmethod
    def _null_history(cls, v: object) -> object:
        return [] if v is None else v


def _now() -> str:
    return datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def _build(body: GLMRequest, ready: Ready) -> GenerationRequest:
    info, settings = ready.model, ready.state.settings
    window = min(info.max_model_len, body.max_length or info.max_model_len)
    reserved = max(1, min(settings.default_max_tokens, window // 4))
    try:
        fitted = fit_history(
            info.tokenizer,
            body.history,
            body.prompt,
            context=window,
            reserved=reserved,
            max_rounds=settings.history_rounds,
        )
    except PromptTooLongError:
        # The budget kept for the answer only decides how much history fits. A question that leaves
        # room for even one token is answered without history, as api.py answers it.
        try:
            fitted = fit_history(info.tokenizer, [], body.prompt, context=window, reserved=1)
        except PromptTooLongError as exc:
            raise APIError(400, str(exc), param="prompt", code="context_length_exceeded") from exc
    if fitted.rounds_kept < len(body.history):
        log.info("history: kept the last %d of %d rounds to fit the context", fitted.rounds_kept, len(body.history))
    check_prompt_tokens(settings.max_prompt_tokens, len(fitted.token_ids), "prompt")
    room = window - len(fitted.token_ids)
    max_tokens = room if body.max_length else min(settings.default_max_tokens, room)
    if settings.max_tokens_limit is not None:
        if body.max_length:
            check_max_tokens(settings.max_tokens_limit + len(fitted.token_ids), body.max_length, "max_length")
        max_tokens = min(max_tokens, settings.max_tokens_limit)
    # temperature and top_p keep ChatGLM api.py's defaults when unset; the model's defaults fill the rest
    extra = {k: v for k, v in info.sampling_defaults.items() if k not in ("temperature", "top_p")}
    params = SamplingParams(max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p, **extra)
    return GenerationRequest(fitted.token_ids, params)


async def _seed_events(deltas: AsyncIterator[Delta]) -> AsyncIterator[StreamEvent]:
    async for d in deltas:
        if d.error:
            yield generation_failed_event(d.error)
            break
        if d.text:
            yield StreamEvent(None, to_json({"id": 0, "time": _now(), "text": d.text}, compact=False))
    yield StreamEvent(None, DONE)


async def _stream(body: GLMRequest, ready: Ready, owner: str | None) -> Response:
    admit(ready, owner)  # before any tokenizer work
    deltas = submit(ready, _build(body, ready), owner)
    return await stream_response(ready, _seed_events(deltas), body.resumable, owner)


@router.post("/stream", response_model=None)
async def stream_post(body: GLMRequest, ready: ReadyServer, owner: Owner) -> Response:
    return await _stream(body, ready, owner)


@router.get("/stream", response_model=None)
async def stream_get(
    state: State,
    owner: Owner,
    prompt: Annotated[str, Query(min_length=1)],
    history: Annotated[str | None, Query(description="JSON list of [question, answer] pairs")] = None,
    max_length: Annotated[int | None, Query(ge=2)] = None,
    top_p: Annotated[float, Query(gt=0.0, le=1.0)] = 0.7,
    temperature: Annotated[float, Query(ge=0.0, le=2.0)] = 0.95,
    resumable: bool = True,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> Response:
    """The browser's `EventSource` reconnects to this same URL with `Last-Event-ID`: resume, don't restart."""
    if last_event_id:
        stream_id, after = resume_point(last_event_id)
        return await resume_response(state, stream_id, after, owner, gone_status=204)
    try:
        rounds = json.loads(history) if history else []
        body = GLMRequest(
            prompt=prompt,
            history=rounds,
            max_length=max_length,
            top_p=top_p,
            temperature=temperature,
            resumable=resumable,
        )
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError; deep nesting recurses
        raise APIError(400, f"invalid query: {exc}", param="history" if history else "prompt") from exc
    return await _stream(body, ready_now(state), owner)


async def _collect(deltas: AsyncIterator[Delta]) -> tuple[list[str], Delta | None]:
    parts, last = [], None
    async for d in deltas:
        parts.append(d.text)
        last = d
    return parts, last


@router.post("/", response_model=None)
async def chatglm_api(body: GLMRequest, ready: ReadyServer, owner: Owner, http: Request) -> Response:
    admit(ready, owner)  # before any tokenizer work
    deltas = submit(ready, _build(body, ready), owner)
    try:
        parts, last = await unless_disconnected(http, _collect(deltas))
    except ClientDisconnectedError:
        return disconnected_response()
    if last is None or last.error:
        raise APIError(500, f"generation failed: {last.error if last else 'no output'}", code="generation_failed")
    response = "".join(parts)
    history = [list(r) for r in body.history] + [[body.prompt, response]]
    return JSONResponse({"response": response, "history": history, "status": 200, "time": _now()})
