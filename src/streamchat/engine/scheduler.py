"""Which sequences run, and in which cache row.

Rows `0..num_decoding` hold decoding sequences and the rows after them hold sequences still being
prefilled, so a decode step reads one contiguous view of the cache. Every move of a sequence
between rows is mirrored in the cache by `move_row`/`swap_rows`.

Admission is bounded by `max_num_seqs` and by the cache budget in tokens. What a row costs
depends on the cache: the transformers row cache is padded to its longest row (rows × longest
length, `padded`), llama.cpp's streams cost the tokens each row holds (the sum). When growth would
pass the budget the newest decoding sequence (the one that arrived last: it has done the least work) is preempted,
vLLM's recompute policy: it waits again at the head of the queue and is prefilled anew. Rows do
not tell age (`remove` fills a freed row with the last one), so the sequence's arrival order does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from streamchat.engine.contracts import RowCache
from streamchat.engine.sequence import SeqStatus, Sequence


class Scheduler:
    def __init__(self, cache: RowCache, max_num_seqs: int, cache_tokens: int, padded: bool = True) -> None:
        self.cache = cache
        self.max_num_seqs = max_num_seqs
        self.cache_tokens = cache_tokens
        self.padded = padded
        self.waiting: deque[Sequence] = deque()
        self.rows: list[Sequence] = []
        self.num_decoding = 0

    @property
    def decoding(self) -> list[Sequence]:
        return self.rows[: self.num_decoding]

    @property
    def prefilling(self) -> list[Sequence]:
        return self.rows[self.num_decoding :]

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.rows)

    def _fits(self, rows: int, longest: int, total: int) -> bool:
        """Whether `rows` rows, the longest holding `longest` tokens and all `total`, fit the budget."""
        return (rows * longest if self.padded else total) <= self.cache_tokens

    def admit(self) -> None:
        """Move waiting sequences into rows while the batch and the cache budget allow."""
        longest = max((s.num_tokens + 1 for s in self.rows), default=0)
        total = sum(s.num_tokens + 1 for s in self.rows)
        while self.waiting and len(self.rows) < self.max_num_seqs:
            seq = self.waiting[0]
            need = max(longest, seq.num_tokens + 1)
            if self.rows and not self._fits(len(self.rows) + 1, need, total + seq.num_tokens + 1):
                break
            self.waiting.popleft()
            longest, total = need, total + seq.num_tokens + 1
            seq.status, seq.row = SeqStatus.PREFILLING, len(self.rows)
            self.rows.append(seq)

    def make_room_for_decode(self) -> list[Sequence]:
        """Preempt the newest decoding sequences until one more token per row fits; return them."""
        preempted = []
        while self.num_decoding > 1:
            longest = max(s.num_tokens + 1 for s in self.decoding)
            if self._fits(len(self.rows), longest, sum(s.num_tokens + 1 for s in self.rows)):
                break
            victim = max(self.decoding, key=lambda s: s.arrival)
            self.remove(victim)
            victim.preempt()
            self.waiting.appendleft(victim)
            preempted.append(victim)
        return preempted

    def promote(self, done: Iterable[Sequence]) -> None:
        """Sequences whose prefill just completed join the decoding block."""
        for seq in done:
            self._swap(seq.row, self.num_decoding)
            seq.status = SeqStatus.DECODING
            self.num_decoding += 1

    def remove(self, seq: Sequence) -> None:
        """Free a sequence's row, keeping both blocks contiguous."""
        row = seq.row
        if row < self.num_decoding:
            self._move(self.num_decoding - 1, row)
            row = self.num_decoding - 1
            self.num_decoding -= 1
        self._move(len(self.rows) - 1, row)
        self.rows.pop()
        seq.row = -1
        if not self.rows:
            self.cache.release()

    def drop_waiting(self, seq: Sequence) -> None:
        self.waiting.remove(seq)

    def _move(self, src: int, dst: int) -> None:
        if src == dst:
            return
        self.cache.move_row(src, dst)
        self.rows[dst] = self.rows[src]
        self.rows[dst].row = dst

    def _swap(self, a: int, b: int) -> None:
        if a == b:
            return
        self.cache.swap_rows(a, b)
        self.rows[a], self.rows[b] = self.rows[b], self.rows[a]
        self.rows[a].row, self.rows[b].row = a, b
