"""An Ollama request, said as the OpenAI request that the one generation path takes.

`/api/chat` becomes a chat request (tool turns included), `/api/generate` a chat request of one
user turn (and `system`), or with `raw` a completion of the prompt as it is. `options` map to the
OpenAI sampling fields, set only when given so the model's sampling defaults still apply to the
rest. What Ollama offers and this server cannot honour (Mirostat, a context larger than the
server's, a custom template, images, `context`) is a 400 naming it, never a silent difference.

Ollama's tool calls carry no ids before 0.12.10, and its tool turns name a function rather than a
call. A call without an id gets one from its place (`call_<message>_<call>`); a tool turn without
`tool_call_id` answers the first unanswered call of the latest assistant turn (the first with its
`tool_name`, when it gives one): results follow their calls in order.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ValidationError

from streamchat.api.errors import APIError
from streamchat.api.ollama_schemas import (
    Format,
    OllamaAnswerFields,
    OllamaChatRequest,
    OllamaGenerateRequest,
    OllamaMessage,
    OllamaOptions,
    OllamaToolCall,
)
from streamchat.api.openai_schemas import ChatCompletionRequest, CompletionRequest
from streamchat.engine.types import GenerationRequest

# OpenAI field → Ollama option, for the settings that mean the same
_SAMPLING = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "repetition_penalty": "repeat_penalty",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}
# names in the errors of the generation path → the Ollama names the client sent
_OLLAMA_NAMES = {
    "response_format": "format",
    "response_format.json_schema.schema": "format",
    "max_tokens": "options.num_predict",
    "stop": "options.stop",
}


def refuse_thinking(body: OllamaAnswerFields) -> None:
    if body.think not in (None, False):
        raise APIError(400, f"'{body.model}' does not support thinking", param="think")


def chat_request(body: OllamaChatRequest, max_model_len: int) -> ChatCompletionRequest:
    if body.tools and body.format not in (None, ""):
        raise APIError(400, "'format' cannot be combined with 'tools': send one of them", param="format")
    fields = _common(body, max_model_len)
    tools = list(body.tools) if body.tools else None
    messages = chat_messages(body.messages)
    return _built(ChatCompletionRequest, messages=messages, tools=tools, **fields, **_chat_logprobs(body))


def generate_request(body: OllamaGenerateRequest, max_model_len: int) -> ChatCompletionRequest | CompletionRequest:
    """`raw`: the prompt as it is; otherwise the chat template around it, as Ollama does."""
    if body.suffix:
        raise APIError(400, "'suffix': this model cannot fill in the middle", param="suffix")
    if body.template:
        message = "'template': custom prompt templates are not supported (use 'raw' with your own formatting)"
        raise APIError(400, message, param="template")
    if body.context:
        message = "'context' is not supported: send the conversation as messages to /api/chat"
        raise APIError(400, message, param="context")
    if body.images:
        raise APIError(400, "'images': this model reads text only", param="images")
    if body.raw and body.system:
        raise APIError(400, "raw mode does not support template, system, or context", param="raw")
    fields = _common(body, max_model_len)
    if body.raw:
        logprobs = body.top_logprobs if body.logprobs else None
        return _built(CompletionRequest, prompt=body.prompt, logprobs=logprobs, **fields)
    messages = [{"role": "system", "content": body.system}] if body.system else []
    messages.append({"role": "user", "content": body.prompt})
    return _built(ChatCompletionRequest, messages=messages, **fields, **_chat_logprobs(body))


def chat_messages(messages: list[OllamaMessage]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    unanswered: list[tuple[str, str]] = []  # (id, name) of the latest assistant turn's calls
    for i, m in enumerate(messages):
        if m.images:
            raise APIError(400, f"'messages.{i}.images': this model reads text only", param=f"messages.{i}.images")
        content = m.content or ""
        if m.role == "assistant" and m.tool_calls:
            calls = [_call(c, c.id or f"call_{i}_{j}") for j, c in enumerate(m.tool_calls)]
            unanswered = [(c["id"], c["function"]["name"]) for c in calls]
            out.append({"role": "assistant", "content": content, "tool_calls": calls})
        elif m.role == "tool":
            call_id = _answered(unanswered, m.tool_call_id, m.tool_name) or m.tool_call_id or f"call_{i}"
            out.append({"role": "tool", "content": content, "tool_call_id": call_id})
        else:
            out.append({"role": m.role, "content": content})
    return out


def _call(call: OllamaToolCall, call_id: str) -> dict[str, Any]:
    arguments = json.dumps(call.function.arguments, ensure_ascii=False)  # OpenAI carries them as JSON text
    return {"id": call_id, "type": "function", "function": {"name": call.function.name, "arguments": arguments}}


def _answered(unanswered: list[tuple[str, str]], given_id: str | None, name: str | None) -> str | None:
    """The id of the call a tool turn answers, now answered: the one it names by id, else the first
    unanswered one (with its function's name, when given)."""
    for k, (call_id, call_name) in enumerate(unanswered):
        if call_id == given_id or (given_id is None and name in (None, call_name)):
            del unanswered[k]
            return call_id
    return None


def _common(body: OllamaAnswerFields, max_model_len: int) -> dict[str, Any]:
    fields = sampling_fields(body.options, max_model_len)
    response_format = _response_format(body.format)
    if response_format is not None:
        fields["response_format"] = response_format
    return fields


def _chat_logprobs(body: OllamaAnswerFields) -> dict[str, Any]:
    return {"logprobs": body.logprobs, "top_logprobs": body.top_logprobs if body.logprobs else 0}


def sampling_fields(options: OllamaOptions | None, max_model_len: int) -> dict[str, Any]:
    """The OpenAI sampling fields of `options`: only those given, so the rest keep the model's defaults."""
    o = options or OllamaOptions()
    _refuse_unhonoured(o, max_model_len)
    fields: dict[str, Any] = {ours: getattr(o, theirs) for ours, theirs in _SAMPLING.items()}
    fields = {k: v for k, v in fields.items() if v is not None}
    if o.seed is not None and o.seed >= 0:
        fields["seed"] = o.seed
    if o.num_predict is not None and o.num_predict > 0:  # -1 and -2 both end at a stop or the full context
        fields["max_tokens"] = o.num_predict
    if o.stop:
        fields["stop"] = o.stop
    return fields


def _refuse_unhonoured(o: OllamaOptions, max_model_len: int) -> None:
    if o.mirostat:
        _refuse("mirostat", "Mirostat sampling is not supported (0 switches it off)")
    if o.typical_p not in (None, 1.0):
        _refuse("typical_p", "locally typical sampling is not supported (1.0 switches it off)")
    if o.tfs_z not in (None, 1.0):
        _refuse("tfs_z", "tail-free sampling is not supported (1.0 switches it off)")
    if o.repeat_last_n is not None and 0 <= o.repeat_last_n < max_model_len:
        _refuse("repeat_last_n", "the repetition penalty here covers the whole context, prompt included: send -1")
    if o.num_ctx is not None and o.num_ctx > max_model_len:
        _refuse("num_ctx", f"this server's context is {max_model_len} tokens; ask for at most that")


def _refuse(option: str, why: str) -> None:
    raise APIError(400, f"'options.{option}': {why}", param=f"options.{option}")


def _response_format(fmt: Format | None) -> dict[str, Any] | None:
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt}}


def fit_context(request: GenerationRequest, options: OllamaOptions | None) -> None:
    """`num_ctx` below the server's context: prompt and answer together stay within it, as in Ollama."""
    num_ctx = options.num_ctx if options is not None else None
    if num_ctx is None:
        return
    prompt = len(request.prompt_token_ids)
    room = num_ctx - prompt
    asked = options.num_predict if options is not None and options.num_predict and options.num_predict > 0 else None
    if room < 1 or (asked is not None and asked > room):
        message = f"'options.num_ctx' is {num_ctx} tokens, but the prompt takes {prompt} and the answer {asked or 1}"
        raise APIError(400, message, param="options.num_ctx")
    params = request.params
    request.params = replace(params, max_tokens=min(params.max_tokens, room), min_tokens=min(params.min_tokens, room))


def in_ollama_terms(exc: APIError) -> APIError:
    """An error of the generation path, naming the fields as the Ollama client sent them."""
    message = exc.message
    for ours, theirs in _OLLAMA_NAMES.items():
        message = message.replace(f"'{ours}'", f"'{theirs}'")
    param = _OLLAMA_NAMES.get(exc.param or "", exc.param)
    return APIError(exc.status, message, param=param, code=exc.code, headers=exc.headers)


def _built(model: type[BaseModel], **fields: Any) -> Any:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:  # what the Ollama schema lets through but the OpenAI one refuses
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise APIError(400, f"'{where}': {first.get('msg', 'invalid value')}", param=where or None) from exc
