"""Prefix reuse for llama.cpp: finished sequences parked in spare sequence ids.

When a sequence ends, its cells are copied into a spare sequence id (each with its own stream), so
the next turn of the same chat copies the shared prefix into its row instead of prefilling it.
Every stream holds its cells at 0..n-1 in position order, and batch-invariant prefill computes the
same keys and values whatever the neighbours, with the attention kernel its own prompt decides
(prefill.py); a prefix is reused only as far as a fresh prefill would have computed it the same
way, so reuse does not change answers.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamchat.engine.llamacpp.cache import LlamaCppCache
from streamchat.engine.llamacpp.prefill import reusable

MIN_REUSE = 8  # a shorter shared prefix is not worth the bookkeeping
# Finished chats whose cells are kept for their next turn. Parked at the end of each answer and
# evicted least recently used first, so a round of more chats than slots, each back in turn, finds
# none of them: with 4 slots, 16 streams over 8 prompts (bench.run) prefilled every prompt anew
# (TTFT p50 526 ms against 193 ms with 16; docs/ARCHITECTURE.md). Each slot is one more stream of
# address space, touched once by llama.cpp's zeroing at start; where pages are handed back, their
# cells stay under a quarter of the cache budget. The factory parks no more chats than rows (4 at
# least).
PARK_SLOTS = 16


@dataclass
class _Parked:
    seq_id: int
    tokens: list[int]
    prompt_len: int
    last_used: int = 0


class ParkedPrefixes:
    """The `PrefixStore` of the llama.cpp runner; sequence ids `first_id..first_id+slots-1` are its own.

    Parked cells are resident memory: together they hold at most `max_tokens` (the least recently
    used go first), the share of the cache budget the factory keeps out of the rows' reach.
    """

    def __init__(self, cache: LlamaCppCache, first_id: int, slots: int, max_tokens: int | None = None) -> None:
        self._cache = cache
        self._free_ids = list(range(first_id, first_id + slots))
        self.parked: list[_Parked] = []
        self._clock = 0
        self.max_tokens = max_tokens

    def park(self, row: int, tokens: list[int], prompt_len: int) -> None:
        """Copy the cells of `row` (holding `tokens`, the first `prompt_len` its prompt) into a spare
        sequence id after its sequence ends."""
        n = min(len(tokens), self._cache.lens[row])
        limit = self.max_tokens if self.max_tokens is not None else float("inf")  # None: the slots bound it
        if n < MIN_REUSE or n > limit or not (self._free_ids or self.parked):
            return
        tokens = tokens[:n]
        # the same chat, one turn further on, replaces its earlier turn
        for p in [p for p in self.parked if tokens[: len(p.tokens)] == p.tokens]:
            self._unpark(p)
        while self.parked and (not self._free_ids or self.held_tokens + n > limit):
            self._unpark(min(self.parked, key=lambda p: p.last_used))
        seq_id = self._free_ids.pop()
        self._cache.copy(row, seq_id, n)
        self._clock += 1
        self.parked.append(_Parked(seq_id, tokens, prompt_len, self._clock))

    def reuse_prefix(self, row: int, tokens: list[int], prompt_len: int) -> int:
        """Copy the longest reusable parked prefix of `tokens` (the first `prompt_len` its prompt)
        into `row`; return its length (< len(tokens))."""
        best, best_len = None, 0
        for p in self.parked:
            # the last token must be fed for its logits
            n = reusable(min(_common_prefix(p.tokens, tokens), len(tokens) - 1), p.prompt_len, prompt_len)
            if n > best_len:
                best, best_len = p, n
        if best is None or best_len < MIN_REUSE:
            return 0
        self._cache.copy(best.seq_id, row, best_len)
        self._cache.lens[row] = best_len
        self._clock += 1
        best.last_used = self._clock
        return best_len

    @property
    def held_tokens(self) -> int:
        return sum(len(p.tokens) for p in self.parked)

    def forget_all(self) -> None:
        """The cells were cleared under us (a failed decode): nothing parked is there any more."""
        self._free_ids += [p.seq_id for p in self.parked]
        self.parked.clear()

    def _unpark(self, p: _Parked) -> None:
        self._cache.forget(p.seq_id)
        self.parked.remove(p)
        self._free_ids.append(p.seq_id)


def _common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens `a` and `b` share. Compared by slices (list equality runs in C), the
    whole length first and then by halving: every admission asks this of every parked prefix, 16 of
    them; over a shared 1,500-token document 12 µs each, where a token-by-token loop took 40 µs."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    same, differs = 0, n  # a[:same] == b[:same], a[:differs] != b[:differs]
    while differs - same > 1:
        mid = (same + differs) // 2
        if a[same:mid] == b[same:mid]:
            same = mid
        else:
            differs = mid
    return same
