"""Speculative decoding by prompt lookup: draft tokens copied from earlier in the same sequence.

An answer that quotes, edits or continues its prompt repeats runs of tokens already there. When
the sequence's last few tokens (an n-gram, 4 down to 2 tokens) occurred before, the tokens that
followed them then are proposed as the next ones. One forward feeds the last token and the drafts
and returns logits at every position; the row's own sampling picks a token at each position and
the drafts are kept while they equal the picks. The picks are those one-token-at-a-time decoding
would make: the runner computes every position of a short chunk by the same arithmetic as a
decode step (llamacpp/prefill.py), so a greedy answer is the same with or without drafts; drafts
only save forwards.

A draft is not free: on a 2-core CPU a forward costs about 8 ms for one token and 3 ms more for
each further one (the small model's products are compute-bound), so a drafted token pays off only
if it is kept more often than about 40 % of the time. Each sequence therefore adapts: its draft
length doubles while whole drafts are kept and falls back to one past what was kept, and while
the share of its drafted tokens it keeps (a running average, `KEEP_AT_LEAST`) stays under half,
or a draft is kept not at all, drafting pauses for a few steps (1, 2, 4… up to 32). Ordinary prose
matches two-token n-grams often and keeps few of their drafts; an answer that copies keeps most.
Drafting is on only while at most `max_running` sequences decode: a busy batch already uses the
cores. Only greedy rows without a grammar draft (a sampled row would draw its random numbers
differently, and a grammar's mask covers one position); the others share the forward, padded, and
take their first position only.

One draft is free. A lone row past 256 cells is fed a throwaway second query so that llama.cpp
does not switch it to the split-KV kernel (llamacpp/batch.py): the forward costs two tokens
whatever the second one is. When such a row has no draft of its own (nothing matched, or its
drafting is paused), that slot carries a guess instead, the token that followed the last
occurrence of its last token (`_guess`), and a kept guess is a token for nothing. Guesses are
counted apart from drafts and do not steer the row's drafting.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from streamchat.engine.sequence import Sequence

NGRAM_MAX = 4
NGRAM_MIN = 2  # shortest n-gram a draft follows; a free guess follows a single token
FIRST_DRAFT = 4  # a sequence's first draft length, before it has shown how much it copies
MAX_PAUSE = 32  # steps without drafting after drafts that were not kept at all, at most
KEEP_AT_LEAST = 0.5  # share of drafted tokens kept (recent drafts) below which drafting pauses
SHARE_DECAY = 0.75  # weight of the drafts before the last in that share


@dataclass
class NgramIndex:
    """For each n-gram of a sequence's tokens, where the token after its latest occurrence sits."""

    after: dict[tuple[int, ...], int] = field(default_factory=dict)
    indexed: int = 0  # tokens[:indexed] have been indexed (n-grams that have a following token)

    def draft(self, tokens: list[int], limit: int, shortest: int = NGRAM_MIN) -> list[int]:
        """Up to `limit` tokens that followed the longest earlier occurrence of the last n-gram of
        `shortest` tokens or more."""
        for end in range(self.indexed + 1, len(tokens)):  # n-grams tokens[end-n:end], followed by tokens[end]
            for n in range(1, NGRAM_MAX + 1):
                if end >= n:
                    self.after[tuple(tokens[end - n : end])] = end
        self.indexed = max(self.indexed, len(tokens) - 1)
        for n in range(NGRAM_MAX, shortest - 1, -1):
            start = self.after.get(tuple(tokens[-n:]))
            if start is not None:
                return tokens[start : start + limit]
        return []


@dataclass
class Lookup:
    """One sequence's drafting: its n-grams, how long its next draft may be, when it may draft again."""

    index: NgramIndex = field(default_factory=NgramIndex)
    limit: int = FIRST_DRAFT
    pause: int = 0  # steps left without drafting
    backoff: int = 1  # the next pause
    recent_drafted: float = 0.0  # drafted tokens, older drafts counting less (SHARE_DECAY per draft)
    recent_kept: float = 0.0

    @property
    def kept_share(self) -> float:
        return self.recent_kept / self.recent_drafted if self.recent_drafted else 1.0

    def kept(self, drafted: int, kept: int, max_draft: int) -> None:
        """How a draft fared: adapt the next draft's length, and pause while drafts do not pay."""
        self.limit = min(max_draft, 2 * self.limit) if kept == drafted else max(1, kept + 1)
        self.recent_drafted = SHARE_DECAY * self.recent_drafted + drafted
        self.recent_kept = SHARE_DECAY * self.recent_kept + kept
        if kept and self.kept_share >= KEEP_AT_LEAST:
            self.backoff = 1
        else:
            self.pause, self.backoff = self.backoff, min(MAX_PAUSE, 2 * self.backoff)


@dataclass
class Drafts:
    """One step's drafts: `tokens[i]` for `seqs[i]` (empty: none), every row fed `width` tokens."""

    tokens: list[list[int]]
    width: int
    free: bool = False  # a guess in the slot of a throwaway query (costs nothing)


class PromptLookup:
    """Decides, each decode step, which rows draft and what (None: decode one token per row)."""

    def __init__(
        self,
        max_draft: int,
        max_running: int,
        max_model_len: int,
        pads_lone_row: Callable[[int], bool] | None = None,
    ) -> None:
        """`pads_lone_row(position)`: whether a lone row decoding there is fed a throwaway query."""
        self.max_draft = max_draft
        self.max_running = max_running
        self.max_model_len = max_model_len
        self.pads_lone_row = pads_lone_row

    def propose(self, seqs: list[Sequence]) -> Drafts | None:
        if not self.max_draft:
            return None
        if len(seqs) <= self.max_running:
            drafts = [self._draft(s) for s in seqs]
            # every row is fed as many positions (one ubatch), each within its stream
            width = min(1 + max(map(len, drafts), default=0), *(self.max_model_len - s.num_tokens + 1 for s in seqs))
            if width > 1:
                return Drafts([d[: width - 1] for d in drafts], width)
        if len(seqs) == 1 and self.pads_lone_row is not None and self.pads_lone_row(seqs[0].num_cached):
            return self._guess(seqs[0])
        return None

    def kept(self, seq: Sequence, drafted: int, kept: int) -> None:
        """`seq` kept `kept` of its `drafted` draft tokens."""
        if seq.lookup is not None and drafted:
            seq.lookup.kept(drafted, kept, self.max_draft)

    def _draft(self, seq: Sequence) -> list[int]:
        room = self._room(seq)
        if room <= 0:
            return []
        lookup = self._lookup(seq)
        if lookup.pause:
            lookup.pause -= 1
            return []
        return lookup.index.draft(seq.prompt_ids + seq.output_ids, min(lookup.limit, room))

    def _guess(self, seq: Sequence) -> Drafts | None:
        if self._room(seq) <= 0:
            return None
        guess = self._lookup(seq).index.draft(seq.prompt_ids + seq.output_ids, 1, shortest=1)
        return Drafts([guess], 2, free=True) if guess else None

    def _lookup(self, seq: Sequence) -> Lookup:
        seq.lookup = seq.lookup or Lookup(limit=min(FIRST_DRAFT, self.max_draft))
        return seq.lookup

    def _room(self, seq: Sequence) -> int:
        """How many tokens `seq` may draft (0: none): only greedy rows without a grammar, and every
        drafted position must fit the row's stream and the answer's length."""
        p = seq.request.params
        if not p.greedy or seq.constraint is not None:
            return 0
        return min(self.max_model_len - seq.num_tokens, p.max_tokens - len(seq.output_ids)) - 1
