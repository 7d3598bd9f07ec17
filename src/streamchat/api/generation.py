"""The one path from a request to the engine, shared by every protocol.

A protocol validates its own body, says what it wants as an OpenAI chat request (the richest of
the shapes: messages, tools, constraints, sampling) and calls `prepare_chat`, which renders the
prompt through the chat template, checks the token limits, applies the model's sampling defaults
and compiles the grammar. Only the shapes of what goes back differ between protocols.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamchat.api.chat_messages import template_messages
from streamchat.api.errors import APIError
from streamchat.api.openai_schemas import ChatCompletionRequest, SamplingFields
from streamchat.api.ready import Ready
from streamchat.api.structured_outputs import GrammarRequest, compile_constraint, requested_grammar
from streamchat.api.token_limits import check_max_tokens, check_prompt_tokens
from streamchat.api.tools import plan, template_knows_tools
from streamchat.chat.prompt import render
from streamchat.engine.types import GenerationRequest


@dataclass
class PreparedChat:
    request: GenerationRequest
    reads_tool_calls: bool  # the answer may hold tool calls (read them with `tool_calls.py`)


async def prepare_chat(ready: Ready, body: ChatCompletionRequest) -> PreparedChat:
    """The engine request for a chat; call it after admission (it tokenizes)."""
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
    request = generation_request(
        body, prompt_ids, ready, body.logprobs, body.top_logprobs if body.logprobs else 0, "messages"
    )
    if grammar is not None:
        request.constraint = await compile_constraint(ready, grammar)
    return PreparedChat(request, tools.grammar is not None)


def completion_prompt(prompt: str | list, ready: Ready) -> list[int]:
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


def generation_request(
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
