"""OpenAI-compatible routes: `/v1/chat/completions`, `/v1/completions`, `/v1/models`.

Chunks are what the official `openai` SDK parses: the first chat chunk carries `delta.role`, the
last carries `finish_reason`, a usage chunk with empty `choices` follows when
`stream_options.include_usage` is set, then `data: [DONE]`. An error after the stream has started
is sent as an `event: error` carrying the OpenAI error object, followed by `[DONE]`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from streamchat.api.auth import require_key
from streamchat.api.disconnect import ClientDisconnectedError, disconnected_response, unless_disconnected
from streamchat.api.errors import APIError, error_body
from streamchat.api.limits import check_max_tokens, check_prompt_tokens
from streamchat.api.openai_schemas import ChatCompletionRequest, CompletionRequest, SamplingFields
from streamchat.api.state import ModelInfo, ServerState, State
from streamchat.api.streaming import stream_response
from streamchat.chat.prompt import render
from streamchat.engine.types import Delta, GenerationRequest, TokenLogprob, Usage
from streamchat.sse.framing import DONE, to_json
from streamchat.streams.manager import Event

router = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])


@router.get("/models")
async def list_models(state: State) -> dict:
    _, info = state.require_ready()
    card = {
        "id": info.name,
        "object": "model",
        "created": info.created,
        "owned_by": "streamchat",
        "max_model_len": info.max_model_len,
    }
    return {"object": "list", "data": [card]}


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, state: State) -> dict:
    state.check_model_name(model_id)
    return (await list_models(state))["data"][0]


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, state: State, http: Request) -> Response:
    state.check_model_name(body.model)
    _, info = state.require_ready()
    state.check_room()  # before any tokenizer work
    try:
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
    except ValueError as exc:
        raise APIError(400, str(exc), param="messages") from exc
    prompt_ids = render(info.tokenizer, messages)
    request = _generation_request(body, prompt_ids, state, body.logprobs, body.top_logprobs if body.logprobs else 0)
    shape = _ChatShape(f"chatcmpl-{uuid.uuid4().hex}", info.name, info.tokenizer)
    return await _respond(state, body, request, shape, http)


@router.post("/completions", response_model=None)
async def completions(body: CompletionRequest, state: State, http: Request) -> Response:
    state.check_model_name(body.model)
    _, info = state.require_ready()
    state.check_room()  # before any tokenizer work
    if body.echo or body.suffix:
        raise APIError(400, "'echo' and 'suffix' are not supported", param="echo" if body.echo else "suffix")
    prompt_ids = _completion_prompt(body.prompt, info)
    top = body.logprobs or 0
    request = _generation_request(body, prompt_ids, state, body.logprobs is not None, top)
    shape = _CompletionShape(f"cmpl-{uuid.uuid4().hex}", info.name)
    return await _respond(state, body, request, shape, http)


def _completion_prompt(prompt: str | list, info: ModelInfo) -> list[int]:
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, str):
        ids = info.tokenizer.encode(prompt)
    elif prompt and all(isinstance(t, int) for t in prompt):
        ids = list(prompt)
    else:
        raise APIError(
            400, "'prompt' must be one string or one list of token ids (batches are not supported)", param="prompt"
        )
    if not ids:
        raise APIError(400, "'prompt' must not be empty", param="prompt")
    vocab = len(info.tokenizer)
    if any(t < 0 or t >= vocab for t in ids):
        raise APIError(400, f"'prompt' holds token ids outside the vocabulary (0..{vocab - 1})", param="prompt")
    return ids


def _generation_request(
    body: SamplingFields, prompt_ids: list[int], state: ServerState, logprobs: bool, top_logprobs: int
) -> GenerationRequest:
    _, info = state.require_ready()
    settings = state.settings
    room = info.max_model_len - len(prompt_ids)
    asked = body.requested_max_tokens
    check_prompt_tokens(settings.max_prompt_tokens, len(prompt_ids), "messages")
    check_max_tokens(settings.max_tokens_limit, asked)
    vocab = len(info.tokenizer)
    if any(t < 0 or t >= vocab for t in body.stop_token_ids or ()):  # out of range they would fail the whole batch
        raise APIError(400, f"'stop_token_ids' must be token ids (0..{vocab - 1})", param="stop_token_ids")
    if room < 1 or (asked is not None and asked > room):
        want = asked if asked is not None else 1
        raise APIError(
            400,
            f"This model's maximum context length is {info.max_model_len} tokens. However, you requested "
            f"{len(prompt_ids) + want} tokens ({len(prompt_ids)} in the messages, {want} in the completion). "
            "Please reduce the length of the messages or completion.",
            param="messages" if room < 1 else "max_tokens",
            code="context_length_exceeded",
        )
    max_tokens = asked if asked is not None else min(room, settings.max_tokens_limit or room)
    return GenerationRequest(prompt_ids, body.sampling(max_tokens, logprobs, top_logprobs))


async def _respond(
    state: ServerState, body: SamplingFields, request: GenerationRequest, shape: _Shape, http: Request
) -> Response:
    deltas = state.submit(request)
    if not body.stream:
        try:
            return JSONResponse(await unless_disconnected(http, _collect(deltas, shape)))
        except ClientDisconnectedError:
            return disconnected_response()
    return await stream_response(state, _stream(deltas, shape, body.include_usage), body.resumable)


async def _collect(deltas: AsyncIterator[Delta], shape: _Shape) -> dict:
    text, logprobs, last = [], [], None
    async for d in deltas:
        text.append(d.text)
        logprobs.extend(d.logprobs)
        last = d
    if last is None or last.error or last.usage is None:
        reason = last.error if last is not None else "no output"
        raise APIError(500, f"generation failed: {reason}", code="generation_failed")
    return shape.whole("".join(text), last, logprobs)


async def _stream(deltas: AsyncIterator[Delta], shape: _Shape, include_usage: bool) -> AsyncIterator[Event]:
    usage_field = {"usage": None} if include_usage else {}
    first = shape.opening()
    if first is not None:
        yield None, to_json({**first, **usage_field})
    async for d in deltas:
        if d.error:
            yield "error", to_json(error_body(500, f"generation failed: {d.error}", code="generation_failed"))
            break
        if d.text or d.logprobs or d.finished:
            yield None, to_json({**shape.chunk(d), **usage_field})
        if d.finished and include_usage and d.usage is not None:
            yield None, to_json({**shape.envelope(), "choices": [], "usage": _usage(d.usage)})
    yield None, DONE


def _usage(u: Usage) -> dict:
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens}


def _finish(d: Delta) -> str | None:
    if d.finish_reason is None:
        return None
    return d.finish_reason.value if d.finish_reason.value in ("stop", "length") else "stop"


@dataclass
class _Shape:
    id: str
    model: str
    created: int = 0
    object_chunk: str = ""
    object_whole: str = ""

    def __post_init__(self) -> None:
        self.created = int(time.time())

    def envelope(self, whole: bool = False) -> dict:
        obj = self.object_whole if whole else self.object_chunk
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "system_fingerprint": None}

    def opening(self) -> dict | None:
        return None

    def chunk(self, d: Delta) -> dict:
        raise NotImplementedError

    def whole(self, text: str, last: Delta, logprobs: list[TokenLogprob]) -> dict:
        raise NotImplementedError


class _ChatShape(_Shape):
    def __init__(self, id: str, model: str, tokenizer: object) -> None:
        super().__init__(id, model, object_chunk="chat.completion.chunk", object_whole="chat.completion")

    def opening(self) -> dict:
        return {
            **self.envelope(),
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
            ],
        }

    def chunk(self, d: Delta) -> dict:
        delta = {"content": d.text} if d.text else {}
        choice = {"index": 0, "delta": delta, "logprobs": _chat_logprobs(d.logprobs), "finish_reason": _finish(d)}
        return {**self.envelope(), "choices": [choice]}

    def whole(self, text: str, last: Delta, logprobs: list[TokenLogprob]) -> dict:
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "logprobs": _chat_logprobs(logprobs), "finish_reason": _finish(last)}
        return {**self.envelope(whole=True), "choices": [choice], "usage": _usage(last.usage)}


class _CompletionShape(_Shape):
    def __init__(self, id: str, model: str) -> None:
        super().__init__(id, model, object_chunk="text_completion", object_whole="text_completion")

    def chunk(self, d: Delta) -> dict:
        choice = {"index": 0, "text": d.text, "logprobs": _completion_logprobs(d.logprobs), "finish_reason": _finish(d)}
        return {**self.envelope(), "choices": [choice]}

    def whole(self, text: str, last: Delta, logprobs: list[TokenLogprob]) -> dict:
        choice = {"index": 0, "text": text, "logprobs": _completion_logprobs(logprobs), "finish_reason": _finish(last)}
        return {**self.envelope(whole=True), "choices": [choice], "usage": _usage(last.usage)}


def _chat_logprobs(items: tuple[TokenLogprob, ...] | list[TokenLogprob]) -> dict | None:
    if not items:
        return None
    return {
        "content": [
            {
                "token": t.token,
                "logprob": t.logprob,
                "bytes": t.bytes,
                "top_logprobs": [{"token": s, "logprob": lp, "bytes": b} for s, lp, b in t.top],
            }
            for t in items
        ]
    }


def _completion_logprobs(items: tuple[TokenLogprob, ...] | list[TokenLogprob]) -> dict | None:
    if not items:
        return None
    return {
        "tokens": [t.token for t in items],
        "token_logprobs": [t.logprob for t in items],
        "top_logprobs": [{s: lp for s, lp, _ in t.top} for t in items],
    }
