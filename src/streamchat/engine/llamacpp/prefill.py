"""How the llama.cpp runner prefills: long prompts in large forwards, each position's numbers fixed
by its own sequence, never by its neighbours.

ggml's CPU flash attention computes a stream's queries in one ubatch with one of two kernels: one
query at a time while the ubatch holds fewer than 64 of that stream's tokens, a tiled kernel from
64 on (much faster for long prompts, other rounding). Either computes a query by the same
arithmetic whatever else shares the ubatch and wherever the sequence's positions were cut into
forwards (tests/engine/llamacpp/test_prefill.py), so only one thing may not depend on the
neighbours: which kernel computed each position. The rule:

- the prompt of a sequence whose prompt holds 64 tokens or more: tiled, fed alone in forwards of
  at least 64 of its tokens (up to the budget; a remainder under 64 is never left);
- a shorter prompt, and the output recomputed after a preemption: one query at a time, at most 63
  tokens per row per forward, as decoding computed it; such rows share forwards.

A parked prefix is reused only as far as a fresh prefill would have computed it the same way
(`reusable`).
"""

from __future__ import annotations

from streamchat.engine.contracts import PrefillRow
from streamchat.engine.llamacpp.batch import INVARIANT_ROW_CHUNK

TILED_FROM = 64  # queries of one stream in a ubatch from which ggml tiles them


def tiled_until(prompt_len: int) -> int:
    """Positions 0..n-1 of a sequence with this prompt are computed by the tiled kernel."""
    return prompt_len if prompt_len >= TILED_FROM else 0


def invariant_plan(rows: list[PrefillRow], budget: int) -> list[int]:
    """The `PrefillPlan` of the rule above: a tiled prompt alone, or one-query chunks side by side."""
    first = rows[0]
    end = tiled_until(first.prompt)
    if first.cached < end:
        big = max(budget, 2 * TILED_FROM)  # any remainder past it splits into pieces of >= 64
        left = end - first.cached
        return [left if left <= big else min(big, left - TILED_FROM)]
    sizes: list[int] = []
    for row in rows:
        if budget <= 0 or row.cached < tiled_until(row.prompt):
            break
        n = min(INVARIANT_ROW_CHUNK, budget, row.total - row.cached)
        sizes.append(n)
        budget -= n
    return sizes


def reusable(common: int, parked_prompt: int, prompt: int) -> int:
    """Of `common` positions shared with a parked sequence (its prompt `parked_prompt` long), how
    many a sequence whose prompt is `prompt` long may take: those both computed with the same
    kernel, leaving none or at least 64 of its tiled prompt to feed."""
    old, new = tiled_until(parked_prompt), tiled_until(prompt)
    n = common if old == new else min(common, old, new)
    if new - TILED_FROM < n < new:
        n = max(0, new - TILED_FROM)
    return n
