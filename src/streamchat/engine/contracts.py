"""The contracts that hold the engine together: what a backend must provide, and what it may.

`LLMEngine` (the step loop) and `Scheduler` depend only on these protocols; each backend package
(`engine/transformers/`, `engine/llamacpp/`) implements them. A backend provides:

- a `RowCache`: keys and values stored by *row*, one row per running sequence. The scheduler keeps
  running sequences in rows `0..n-1` and mirrors every move of a sequence with `move_row` or
  `swap_rows`; `release` is called when no row is in use.
- a `Runner`: `forward(first_row, chunks, starts)` feeds `chunks[i]` to row `first_row + i` from
  position `starts[i]` and returns one row of logits per chunk, at the chunk's last token.

Two capabilities are optional and declared as such rather than filled with no-ops:

- `Runner.max_row_chunk`: the most tokens one row may feed per forward (None: no limit). llama.cpp
  needs it to keep greedy answers independent of the batch.
- `Runner.prefixes`: a `PrefixStore` that keeps the keys and values of finished sequences so a
  later prompt starting with the same tokens skips prefilling them (None: not supported).
- `Runner.prefill_plan`: a `PrefillPlan` that decides how many tokens each prefilling row feeds
  per forward (None, or absent: fill `prefill_chunk` tokens row by row up to `max_row_chunk`).
  llama.cpp needs it to prefill long prompts in large chunks while every position's keys and
  values still come from the same arithmetic whatever the neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch


class RowCache(Protocol):
    def move_row(self, src: int, dst: int) -> None:
        """Row `dst` now holds what `src` held; `src` is free."""
        ...

    def swap_rows(self, a: int, b: int) -> None: ...

    def release(self) -> None:
        """No row is in use: hand back what can be handed back."""
        ...


class PrefixStore(Protocol):
    def reuse_prefix(self, row: int, token_ids: list[int], prompt_len: int) -> int:
        """Put stored keys/values of a prefix of `token_ids` (its first `prompt_len` the prompt) into
        `row`; return how many (< len)."""
        ...

    def park(self, row: int, token_ids: list[int], prompt_len: int) -> None:
        """`row`'s sequence ended holding `token_ids` (the first `prompt_len` its prompt): keep them
        for a later `reuse_prefix`."""
        ...


@dataclass(frozen=True)
class PrefillRow:
    """What a prefill plan knows of one prefilling row."""

    cached: int  # positions already in the cache
    prompt: int  # the prompt's length (positions past it are output recomputed after preemption)
    total: int  # positions to hold before decoding: prompt and output so far


class PrefillPlan(Protocol):
    def __call__(self, rows: list[PrefillRow], budget: int) -> list[int]:
        """Tokens each of the first rows feeds in the next forward (one entry per row fed, in row
        order, each > 0), about `budget` in all."""
        ...


class Runner(Protocol):
    cache: RowCache
    max_row_chunk: int | None
    prefixes: PrefixStore | None
    prefill_plan: PrefillPlan | None

    def forward(self, first_row: int, chunks: list[list[int]], starts: list[int]) -> torch.Tensor:
        """logits: [len(chunks), vocab], float32, at each chunk's last token."""
        ...


class Tokenizer(Protocol):
    """The part of a transformers tokenizer the engine uses (decoding answers, naming tokens)."""

    def decode(self, ids: list[int], skip_special_tokens: bool = ...) -> str: ...
