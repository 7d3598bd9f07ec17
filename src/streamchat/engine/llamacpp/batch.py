"""One forward as one `llama_batch`, laid out so that a row's numbers do not depend on its neighbours.

Each row's chunk goes at positions `start..start+n-1` tagged with that row's sequence id, rows in
ascending order (llama.cpp groups only consecutive sequence ids into one ubatch), logits asked for
only at each row's last token.

ggml's CPU flash attention computes a query row by the same arithmetic whatever else is in the
ubatch, except in two cases: a tiled kernel (other rounding) once a ubatch holds 64 queries of one
stream, and a split-KV kernel for a lone query (one stream, one token) over >= 512 cells. With
batch invariance on, which positions the tiled kernel computes is decided by the sequence alone
(prefill.py: its prompt, if 64 tokens or more, and nothing else; other rows feed at most 63 tokens,
`INVARIANT_ROW_CHUNK`), and a lone one-token forward past 256 cells gets a throwaway second query of
the same row (`needs_company`): greedy answers then do not depend on the batch.
"""

from __future__ import annotations

import llama_cpp as llama

INVARIANT_ROW_CHUNK = 63
SPLIT_KV_FROM = 256  # llama.cpp pads the cells attended to 256s: past 256 a lone query sees >= 512


def needs_company(chunks: list[list[int]], starts: list[int], n_ctx_seq: int) -> bool:
    """One row, one token, past 256 cells: alone it would take the split-KV kernel."""
    return len(chunks) == 1 and len(chunks[0]) == 1 and SPLIT_KV_FROM <= starts[0] < n_ctx_seq - 1


class BatchWriter:
    """Fills one reusable `llama_batch` of up to `capacity` tokens."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.batch = llama.llama_batch_init(capacity, 0, 1)

    def fill(
        self, first_row: int, chunks: list[list[int]], starts: list[int], company: bool, every: bool = False
    ) -> list[int]:
        """Lay out the rows' chunks; return the batch index of each row's last token (its logits), or
        of every token with `every`.

        With `company`, a second query of the lone row follows at the next position, with no logits;
        the caller drops its cell after the decode.
        """
        b = self.batch
        outputs: list[int] = []
        i = 0
        for row, (chunk, start) in enumerate(zip(chunks, starts, strict=True), start=first_row):
            for j, tok in enumerate(chunk):
                _put(b, i, tok, start + j, row)
                if every:
                    b.logits[i] = 1
                    outputs.append(i)
                i += 1
            if not every:
                b.logits[i - 1] = 1
                outputs.append(i - 1)
        if company:
            _put(b, i, chunks[0][0], starts[0] + 1, first_row)
            i += 1
        b.n_tokens = i
        return outputs

    def free(self) -> None:
        llama.llama_batch_free(self.batch)


def _put(b: llama.llama_batch, i: int, token: int, pos: int, seq_id: int) -> None:
    b.token[i] = token
    b.pos[i] = pos
    b.n_seq_id[i] = 1
    b.seq_id[i][0] = seq_id
    b.logits[i] = 0
