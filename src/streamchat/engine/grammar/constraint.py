"""One request's grammar state: which tokens may come next, advanced by each sampled token."""

from __future__ import annotations

import llguidance


class Constraint:
    """A live llguidance matcher owned by one sequence; only the engine thread touches it after
    submission (the mask worker reads it while the engine thread waits for the mask)."""

    def __init__(self, matcher: llguidance.LLMatcher, description: str, vocab_size: int) -> None:
        self.matcher = matcher
        self.description = description  # what the grammar enforces, for logs and errors
        self.vocab_words = (vocab_size + 31) // 32  # int32 words of one mask row

    def consume(self, token_id: int) -> str | None:
        """Advance past `token_id`; the grammar's error message if the token broke it."""
        if self.matcher.consume_token(token_id):
            return None
        return self.matcher.get_error() or f"token {token_id} does not fit the {self.description}"

    @property
    def complete(self) -> bool:
        """The grammar allows nothing more: the answer is finished."""
        return self.matcher.is_stopped()
