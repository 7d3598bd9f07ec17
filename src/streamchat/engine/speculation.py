"""Speculative decoding by prompt lookup: draft tokens copied from earlier in the same sequence.

An answer that quotes, edits or continues its prompt repeats runs of tokens already there. When
the sequence's last few tokens (an n-gram, 4 down to 2 tokens) occurred before, the tokens that
followed them then are proposed as the next ones. One forward feeds the last token and the drafts
and returns logits at every position; the row's own sampling picks a token at each position and
the drafts are kept while they equal the picks. The picks are those one-token-at-a-time decoding
would make: the runner computes every position of a short chunk by the same arithmetic as a
decode step (llamacpp/prefill.py), so a greedy answer is the same with or without drafts; drafts
only save forwards.

A forward of a few tokens costs about what one token costs while few rows decode (a CPU reads the
weights once per forward and is otherwise idle), and much more once the batch keeps it busy, so
drafting is on only while at most `max_running` sequences decode. Only greedy rows without a
grammar draft (a sampled row would draw its random numbers differently, and a grammar's mask
covers one position); the others share the forward, padded, and take their first position only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streamchat.engine.sequence import Sequence

NGRAM_MAX = 4
NGRAM_MIN = 2


@dataclass
class NgramIndex:
    """For each n-gram of a sequence's tokens, where the token after its latest occurrence sits."""

    after: dict[tuple[int, ...], int] = field(default_factory=dict)
    indexed: int = 0  # tokens[:indexed] have been indexed (n-grams that have a following token)

    def draft(self, tokens: list[int], limit: int) -> list[int]:
        """Up to `limit` tokens that followed the longest earlier occurrence of the last n-gram."""
        for end in range(self.indexed + 1, len(tokens)):  # n-grams tokens[end-n:end], followed by tokens[end]
            for n in range(NGRAM_MIN, NGRAM_MAX + 1):
                if end >= n:
                    self.after[tuple(tokens[end - n : end])] = end
        self.indexed = max(self.indexed, len(tokens) - 1)
        for n in range(NGRAM_MAX, NGRAM_MIN - 1, -1):
            start = self.after.get(tuple(tokens[-n:]))
            if start is not None:
                return tokens[start : start + limit]
        return []


@dataclass
class Drafts:
    """One step's drafts: `tokens[i]` for `seqs[i]` (empty: none), every row fed `width` tokens."""

    tokens: list[list[int]]
    width: int


class PromptLookup:
    """Decides, each decode step, which rows draft and what (None: decode one token per row)."""

    def __init__(self, max_draft: int, max_running: int, max_model_len: int) -> None:
        self.max_draft = max_draft
        self.max_running = max_running
        self.max_model_len = max_model_len

    def propose(self, seqs: list[Sequence]) -> Drafts | None:
        if not self.max_draft or len(seqs) > self.max_running:
            return None
        drafts = [self._draft(s) for s in seqs]
        # every row is fed as many positions (one ubatch), each within its stream
        width = min(1 + max(map(len, drafts), default=0), *(self.max_model_len - s.num_tokens + 1 for s in seqs))
        return Drafts([d[: width - 1] for d in drafts], width) if width > 1 else None

    def _draft(self, seq: Sequence) -> list[int]:
        p = seq.request.params
        if not p.greedy or seq.constraint is not None:
            return []
        # every drafted position must fit the row's stream and the answer's length
        room = min(self.max_model_len - seq.num_tokens, p.max_tokens - len(seq.output_ids)) - 1
        if room <= 0:
            return []
        if seq.lookup is None:
            seq.lookup = NgramIndex()
        return seq.lookup.draft(seq.prompt_ids + seq.output_ids, min(self.max_draft, room))
