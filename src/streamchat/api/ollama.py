"""Ollama's API: `/api/chat`, `/api/generate`, `/api/tags`, `/api/show`, `/api/ps`, `/api/version`.

Enough for the official `ollama` client and the web UIs that speak Ollama. A request is said as
an OpenAI request (`ollama_requests.py`) and takes the one generation path (`generation.py`,
`submission.py`); answers are NDJSON lines by default, one object per token as it is produced
(`ollama_shapes.py`, `ndjson.py`), or one object with `"stream": false`. Errors, before or
during the stream, are `{"error": "…"}` as Ollama sends them (`errors.py`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from streamchat.api.auth import Owner, require_key
from streamchat.api.disconnect import ClientDisconnectedError, disconnected_response, unless_disconnected
from streamchat.api.errors import APIError
from streamchat.api.generation import completion_prompt, generation_request, prepare_chat
from streamchat.api.ndjson import NDJSONResponse
from streamchat.api.ollama_models import listed, model_files, running, served_models, shown, use_model
from streamchat.api.ollama_requests import (
    chat_request,
    fit_context,
    generate_request,
    in_ollama_terms,
    refuse_thinking,
)
from streamchat.api.ollama_schemas import (
    OllamaAnswerFields,
    OllamaChatRequest,
    OllamaGenerateRequest,
    OllamaShowRequest,
)
from streamchat.api.ollama_shapes import Answer, loaded
from streamchat.api.openai_schemas import ChatCompletionRequest, CompletionRequest
from streamchat.api.ready import Ready, ReadyServer
from streamchat.api.structured_outputs import compile_constraint, requested_grammar
from streamchat.api.submission import admit, submit
from streamchat.engine.types import Delta, GenerationRequest

router = APIRouter(prefix="/api", dependencies=[Depends(require_key)])

# The Ollama release whose API these routes follow (tool call ids, logprobs): clients gate features on it.
OLLAMA_API_VERSION = "0.12.11"


@router.get("/version")
async def version() -> dict:
    return {"version": OLLAMA_API_VERSION}


@router.get("/tags")
async def tags(ready: ReadyServer) -> dict:
    served = served_models(ready.state)
    return {"models": [listed(model, await model_files(model.spec)) for model in served]}


@router.get("/ps")
async def ps(ready: ReadyServer) -> dict:
    resident = [model for model in served_models(ready.state) if model.info is not None]
    return {"models": [running(model, await model_files(model.spec)) for model in resident]}


@router.post("/show")
async def show(body: OllamaShowRequest, ready: ReadyServer) -> dict:
    name = body.model or body.name
    if not name:
        raise APIError(400, "model is required", param="model")
    model = await use_model(ready, name)
    return shown(ready.model, await model_files(model.spec))


@router.post("/chat", response_model=None)
async def chat(body: OllamaChatRequest, ready: ReadyServer, owner: Owner, http: Request) -> Response:
    started = time.monotonic()
    await use_model(ready, body.model)
    refuse_thinking(body)
    if not body.messages:
        return JSONResponse(loaded(body.model, chat=True))
    wanted = chat_request(body, ready.model.max_model_len)
    admit(ready, owner)  # before any tokenizer work
    try:
        prepared = await prepare_chat(ready, wanted)
    except APIError as exc:
        raise in_ollama_terms(exc) from exc
    fit_context(prepared.request, body.options)
    answer = Answer(body.model, True, prepared.request, started, prepared.reads_tool_calls, body.logprobs)
    return await _respond(ready, body, answer, owner, http)


@router.post("/generate", response_model=None)
async def generate(body: OllamaGenerateRequest, ready: ReadyServer, owner: Owner, http: Request) -> Response:
    started = time.monotonic()
    await use_model(ready, body.model)
    refuse_thinking(body)
    if not body.prompt:
        return JSONResponse(loaded(body.model, chat=False))
    wanted = generate_request(body, ready.model.max_model_len)
    admit(ready, owner)  # before any tokenizer work
    try:
        request = await _prepared(ready, wanted)
    except APIError as exc:
        raise in_ollama_terms(exc) from exc
    fit_context(request, body.options)
    answer = Answer(body.model, False, request, started, logprobs=body.logprobs)
    return await _respond(ready, body, answer, owner, http)


async def _prepared(ready: Ready, wanted: ChatCompletionRequest | CompletionRequest) -> GenerationRequest:
    """The engine request: through the chat template, or (`raw`) the prompt's own tokens."""
    if isinstance(wanted, ChatCompletionRequest):
        return (await prepare_chat(ready, wanted)).request
    prompt_ids = completion_prompt(wanted.prompt, ready)
    request = generation_request(wanted, prompt_ids, ready, wanted.logprobs is not None, wanted.logprobs or 0, "prompt")
    grammar = requested_grammar(wanted)
    if grammar is not None:
        request.constraint = await compile_constraint(ready, grammar)
    return request


async def _respond(
    ready: Ready, body: OllamaAnswerFields, answer: Answer, owner: str | None, http: Request
) -> Response:
    deltas = submit(ready, answer.request, owner)
    if body.streamed:
        return NDJSONResponse(_objects(deltas, answer))
    try:
        return JSONResponse(await unless_disconnected(http, _collect(deltas, answer)))
    except ClientDisconnectedError:
        return disconnected_response()


async def _objects(deltas: AsyncIterator[Delta], answer: Answer) -> AsyncGenerator[dict[str, Any], None]:
    """The streamed objects; an error after the start is a last `{"error": …}` line, as Ollama sends it."""
    try:
        async for d in deltas:
            if d.error:
                yield {"error": f"generation failed: {d.error}"}
                return
            obj = answer.chunk(d)
            if obj is not None:
                yield obj
    finally:
        await deltas.aclose()  # type: ignore[attr-defined]  # a client that left aborts the request


async def _collect(deltas: AsyncIterator[Delta], answer: Answer) -> dict[str, Any]:
    chunks = []
    async with aclosing(_objects(deltas, answer)) as objects:
        async for obj in objects:
            if "error" in obj:
                raise APIError(500, obj["error"], code="generation_failed")
            chunks.append(obj)
    if not chunks or not chunks[-1]["done"]:
        raise APIError(500, "generation failed: no output", code="generation_failed")
    return answer.whole(chunks)
