"""Messages → prompt token ids, through the tokenizer's own chat template.

The seed kept the last five rounds of history whatever their size. We keep the most recent rounds
that fit the context window minus the answer's budget (optionally capped by `history_rounds`),
and refuse a prompt that cannot fit even alone, naming the token counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Message = dict[str, Any]


class ChatTokenizer(Protocol):
    def apply_chat_template(self, conversation: list[Message], **kwargs: Any) -> Any: ...

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...


class PromptTooLongError(ValueError):
    def __init__(self, prompt_tokens: int, limit: int, context: int, reserved: int) -> None:
        super().__init__(
            f"the prompt has {prompt_tokens} tokens, but only {limit} fit: the context window is "
            f"{context} tokens and {reserved} are kept for the answer"
        )
        self.prompt_tokens, self.limit = prompt_tokens, limit


def render(tokenizer: ChatTokenizer, messages: list[Message], tools: list[dict] | None = None) -> list[int]:
    """Token ids of `messages` followed by the assistant's turn header; `tools` go to a template
    that renders tool definitions itself."""
    if getattr(tokenizer, "chat_template", None):
        extra = {"tools": tools} if tools else {}
        out = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, **extra
        )
        return list(out["input_ids"])
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
    return tokenizer.encode(text)


def rounds_to_messages(history: Sequence[Sequence[str]], prompt: str, system: str | None = None) -> list[Message]:
    """ChatGLM's `[[question, answer], ...]` history plus a new question, as chat messages."""
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    for question, answer in history:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": prompt})
    return messages


@dataclass(frozen=True)
class FittedPrompt:
    token_ids: list[int]
    rounds_kept: int


def fit_history(
    tokenizer: ChatTokenizer,
    history: Sequence[Sequence[str]],
    prompt: str,
    *,
    context: int,
    reserved: int,
    max_rounds: int | None = None,
) -> FittedPrompt:
    """Keep the newest rounds whose prompt fits in `context - reserved` tokens."""
    limit = context - reserved
    rounds = list(history)[-max_rounds:] if max_rounds is not None else list(history)
    if max_rounds == 0:
        rounds = []
    lo, hi = 0, len(rounds)  # binary search on how many of the newest rounds to keep
    best: list[int] | None = None
    bare = render(tokenizer, rounds_to_messages([], prompt))
    if len(bare) > limit:
        raise PromptTooLongError(len(bare), limit, context, reserved)
    best, kept = bare, 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        ids = render(tokenizer, rounds_to_messages(rounds[len(rounds) - mid :], prompt))
        if len(ids) <= limit:
            best, kept, lo = ids, mid, mid
        else:
            hi = mid - 1
    return FittedPrompt(best, kept)
