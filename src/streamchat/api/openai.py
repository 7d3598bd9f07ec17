"""OpenAI-compatible routes: `/v1/chat/completions`, `/v1/completions`, `/v1/models`.

Chunks are what the official `openai` SDK parses: the first chat chunk carries `delta.role`, the
last carries `finish_reason`, a usage chunk with empty `choices` follows when
`stream_options.include_usage` is set, then `data: [DONE]`. An error after the stream has started
is sent as an `event: error` carrying the OpenAI error object, followed by `[DONE]`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from streamchat.api.auth import Owner, require_key
from streamchat.api.chat_messages import template_messages
from streamchat.api.disconnect import ClientDisconnectedError, disconnected_response, unless_disconnected
from streamchat.api.errors import APIError, generation_failed_event
from streamchat.api.openai_schemas import ChatCompletionRequest, CompletionRequest, SamplingFields
from streamchat.api.openai_shapes import ChatShape, CompletionShape, Shape, usage
from streamchat.api.ready import Ready, ReadyServer
from streamchat.api.structured_outputs import GrammarRequest, compile_constraint, requested_grammar
from streamchat.api.submission import admit, stream_response, submit
from streamchat.api.token_limits import check_max_tokens, check_prompt_tokens
from streamchat.api.tools import plan, template_knows_tools
from streamchat.chat.prompt import render
from streamchat.engine.types import Delta, GenerationRequest
from streamchat.sse.framing import DONE, to_json
from streamchat.streams.log import StreamEvent

router = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])


@router.get("/models")
async def list_models(ready: ReadyServer) -> dict:
    return {"object": "list", "data": [_model_card(ready)]}


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, ready: ReadyServer) -> dict:
    ready.check_model_name(model_id)
    return _model_card(ready)


def _model_card(ready: Ready) -> dict:
    info = ready.model
    return {
        "id": info.name,
        "object": "model",
        "created": info.created,
        "owned_by": "streamchat",
        "max_model_len": info.max_model_len,
        "sampling_defaults": info.sampling_defaults,
    }


@router.post("/chat/completions", response_model=None)
async def chat_completions(body: ChatCompletionRequest, ready: ReadyServer, owner: Owner, http: Request) -> Response:
    ready.check_model_name(body.model)
    admit(ready, owner)  # before any tokenizer work
    tools = plan(body.tools, body.tool_choice, body.parallel_tool_calls)
    grammar = requested_grammar(body)
    if tools.grammar is not None:
        if grammar is not None:
            raise APIError(400, f"'{grammar.param}' cannot be combined with tool calls", param=grammar.param)
        grammar = GrammarRequest(tools.grammar, tools.description, "tools")
    tokenizer = ready.model.tokenizer
    native = template_knows_tools(tokenizer)
    messages = template_messages(body.messages, tools.tools, native)
    definitions = [t.model_dump(exclude_none=True) for t in tools.tools] if native else None
    prompt_ids = render(tokenizer, messages, definitions)
    request = _generation_request(
        body, prompt_ids, ready, body.logprobs, body.top_logprobs if body.logprobs else 0, "messages"
    )
    if grammar is not None:
        request.constraint = await compile_constraint(ready, grammar)
    shape = ChatShape(f"chatcmpl-{uuid.uuid4().hex}", ready.model.name, reads_tool_calls=tools.grammar is not None)
    return await _respond(ready, body, submit(ready, request, owner), shape, http, owner)


@router.post("/completions", response_model=None)
async def completions(body: CompletionRequest, ready: ReadyServer, owner: Owner, http: Request) -> Response:
    ready.check_model_name(body.model)
    admit(ready, owner)  # before any tokenizer work
    if body.echo or body.suffix:
        raise APIError(400, "'echo' and 'suffix' are not supported", param="echo" if body.echo else "suffix")
    prompt_ids = _completion_prompt(body.prompt, ready)
    request = _generation_request(body, prompt_ids, ready, body.logprobs is not None, body.logprobs or 0, "prompt")
    grammar = requested_grammar(body)
    if grammar is not None:
        request.constraint = await compile_constraint(ready, grammar)
    shape = CompletionShape(f"cmpl-{uuid.uuid4().hex}", ready.model.name)
    return await _respond(ready, body, submit(ready, request, owner), shape, http, owner)


def _completion_prompt(prompt: str | list, ready: Ready) -> list[int]:
    tokenizer = ready.model.tokenizer
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
        prompt = prompt[0]
    if isinstance(prompt, str):
        ids = tokenizer.encode(prompt)
    elif prompt and all(isinstance(t, int) for t in prompt):
        ids = list(prompt)
    else:
        raise APIError(
            400, "'prompt' must be one string or one list of token ids (batches are not supported)", param="prompt"
        )
    if not ids:
        raise APIError(400, "'prompt' must not be empty", param="prompt")
    vocab = len(tokenizer)
    if any(t < 0 or t >= vocab for t in ids):
        raise APIError(400, f"'prompt' holds token ids outside the vocabulary (0..{vocab - 1})", param="prompt")
    return ids


def _generation_request(
    body: SamplingFields, prompt_ids: list[int], ready: Ready, logprobs: bool, top_logprobs: int, prompt_param: str
) -> GenerationRequest:
    """`prompt_param` names the field that holds the prompt ('messages' or 'prompt') in errors."""
    info, settings = ready.model, ready.state.settings
    room = info.max_model_len - len(prompt_ids)
    asked = body.requested_max_tokens
    length_param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
    check_prompt_tokens(settings.max_prompt_tokens, len(prompt_ids), prompt_param)
    check_max_tokens(settings.max_tokens_limit, asked, length_param)
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
            param=prompt_param if room < 1 else length_param,
            code="context_length_exceeded",
        )
    max_tokens = asked if asked is not None else min(room, settings.max_tokens_limit or room)
    return GenerationRequest(prompt_ids, body.sampling(max_tokens, logprobs, top_logprobs, info.sampling_defaults))


async def _respond(
    ready: Ready, body: SamplingFields, deltas: AsyncIterator[Delta], shape: Shape, http: Request, owner: str | None
) -> Response:
    if not body.stream:
        try:
            return JSONResponse(await unless_disconnected(http, _collect(deltas, shape)))
        except ClientDisconnectedError:
            return disconnected_response()
    return await stream_response(ready, _events(deltas, shape, body.include_usage), body.resumable, owner)


async def _collect(deltas: AsyncIterator[Delta], shape: Shape) -> dict:
    text, logprobs, last = [], [], None
    async for d in deltas:
        text.append(d.text)
        logprobs.extend(d.logprobs)
        last = d
    if last is None or last.error or last.usage is None:
        reason = last.error if last is not None else "no output"
        raise APIError(500, f"generation failed: {reason}", code="generation_failed")
    return shape.whole("".join(text), last, logprobs)


async def _events(deltas: AsyncIterator[Delta], shape: Shape, include_usage: bool) -> AsyncIterator[StreamEvent]:
    usage_field = {"usage": None} if include_usage else {}
    first = shape.opening()
    if first is not None:
        yield StreamEvent(None, to_json({**first, **usage_field}))
    async for d in deltas:
        if d.error:
            yield generation_failed_event(d.error)
            break
        for chunk in shape.chunks(d):
            yield StreamEvent(None, to_json({**chunk, **usage_field}))
        if d.finished and include_usage and d.usage is not None:
            yield StreamEvent(None, to_json({**shape.envelope(), "choices": [], "usage": usage(d.usage)}))
    yield StreamEvent(None, DONE)
