"""Token ceilings an operator may set: the longest prompt, the largest `max_tokens` (400 beyond)."""

from __future__ import annotations

from streamchat.api.errors import APIError


def check_prompt_tokens(limit: int | None, prompt_tokens: int, param: str) -> None:
    if limit is not None and prompt_tokens > limit:
        raise APIError(
            400,
            f"the prompt has {prompt_tokens} tokens; this server accepts at most {limit}",
            param=param,
            code="prompt_too_long",
        )


def check_max_tokens(limit: int | None, asked: int | None, param: str = "max_tokens") -> None:
    if limit is not None and asked is not None and asked > limit:
        raise APIError(
            400, f"'{param}' is {asked}; this server allows at most {limit}", param=param, code="max_tokens_too_large"
        )
