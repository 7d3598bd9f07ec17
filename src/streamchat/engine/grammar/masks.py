"""Token masks for the constrained rows of one step, computed while the forward runs.

llguidance computes masks in Rust without the GIL, so the engine thread starts the computation
for the rows it is about to sample, runs the forward, and then collects the masks: the mask time
hides behind the forward. A mask is a bitmask, 32 tokens per int32 word (llguidance's layout).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import llguidance
import torch

from streamchat.engine.grammar.constraint import Constraint

_BITS = torch.tensor([1 << i for i in range(31)] + [-(1 << 31)], dtype=torch.int32)  # bit i of an int32 word


class MaskTimes:
    """Seconds spent computing each recent step's masks (for the metrics' p50/p99); bounded."""

    def __init__(self, keep: int = 1024) -> None:
        self.samples: list[float] = []
        self._keep = keep

    def add(self, seconds: float) -> None:
        if len(self.samples) >= self._keep:
            del self.samples[: self._keep // 2]
        self.samples.append(seconds)


class MaskWorker:
    """Computes the masks of a batch of constraints on a worker thread."""

    def __init__(self, vocab_words: int) -> None:
        self._words = vocab_words
        self._executor = llguidance.LLExecutor()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="grammar-masks")
        self.times = MaskTimes()

    def start(self, constraints: Sequence[Constraint]) -> Future[torch.Tensor]:
        """Begin computing one mask row per constraint, in order."""
        # Allocated here: a torch op on the worker thread could give it an OpenMP team of its own.
        bitmask = torch.full((len(constraints), self._words), -1, dtype=torch.int32)
        return self._thread.submit(self._compute, list(constraints), bitmask)

    def _compute(self, constraints: list[Constraint], bitmask: torch.Tensor) -> torch.Tensor:
        began = time.perf_counter()
        pairs = [(c.matcher, i) for i, c in enumerate(constraints)]
        # What llguidance.torch.fill_next_token_bitmask_par does; importing that module compiles a
        # kernel with torch.compile at import, which loads torch._dynamo (~150 MB resident).
        self._executor.unsafe_compute_mask_ptr(pairs, bitmask.data_ptr(), self._words * 4, len(pairs))
        self.times.add(time.perf_counter() - began)
        return bitmask

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)


def apply_masks(logits: torch.Tensor, rows: list[int], bitmask: torch.Tensor) -> None:
    """Set to -inf, in place, every logit of `rows` whose token the matching bitmask row forbids."""
    vocab = logits.shape[1]
    allowed = (bitmask.unsqueeze(-1) & _BITS) != 0  # [n, words, 32]
    allowed = allowed.reshape(len(rows), -1)
    width = min(vocab, allowed.shape[1])
    index = torch.tensor(rows, dtype=torch.long)
    block = logits.index_select(0, index)
    block[:, :width].masked_fill_(~allowed[:, :width], float("-inf"))
    block[:, width:] = float("-inf")  # ids past the tokenizer's vocabulary are never allowed
    logits.index_copy_(0, index, block)
