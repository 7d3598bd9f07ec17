"""The distinct token ids of a prompt and its answer so far, kept as one index tensor grown in place.

Why: the repetition penalty (on by default for the embedded model) reads this set at every step of
every row. Rebuilding it from the prompt and output lists (set union, sort, a new tensor) cost
about 0.2 ms per row and step, a few percent of a single stream's decode; taking in only the
tokens added since the last step costs a few microseconds.
"""

from __future__ import annotations

import numpy as np
import torch


class SeenTokens:
    """Token ids seen in `prompt_ids` and in the output ids passed to `ids`, each once."""

    def __init__(self, prompt_ids: list[int]) -> None:
        distinct = list(dict.fromkeys(prompt_ids))
        self._seen = set(distinct)
        self._ids = np.zeros(max(64, 2 * len(distinct)), dtype=np.int64)
        self._ids[: len(distinct)] = distinct
        self._count = len(distinct)
        self._prompt_count = len(distinct)
        self._outputs_taken = 0

    def ids(self, output_ids: list[int]) -> torch.Tensor:
        """Every distinct id of the prompt and of `output_ids` (an answer that only ever grows;
        one that shrank is taken in again from its start). The tensor shares memory with this
        object: read it before the next call."""
        if len(output_ids) < self._outputs_taken:
            self._forget_outputs()
        for tok in output_ids[self._outputs_taken :]:
            if tok not in self._seen:
                self._add(tok)
        self._outputs_taken = len(output_ids)
        return torch.from_numpy(self._ids[: self._count])

    def _add(self, tok: int) -> None:
        if self._count == len(self._ids):
            self._ids = np.concatenate([self._ids, np.zeros_like(self._ids)])
        self._ids[self._count] = tok
        self._count += 1
        self._seen.add(tok)

    def _forget_outputs(self) -> None:
        self._count = self._prompt_count
        self._seen = set(self._ids[: self._count].tolist())
        self._outputs_taken = 0
