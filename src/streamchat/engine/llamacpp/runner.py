"""Forward passes of a GGUF model through llama.cpp: the `Runner` of the llama.cpp backend.

The engine (scheduler, sampler, detokenizer, stop strings) is the one the transformers backend
uses; only the forward and the cache change. The pieces:

- `cache.py`: engine rows as llama.cpp sequence ids, each with its own KV stream; row moves copy cells;
- `batch.py`: one forward as one `llama_batch`, with the rules that keep a row's numbers
  independent of its batch;
- `prefill.py`: how many tokens a prefilling row feeds per forward, for the same reason;
- `prefixes.py`: finished sequences parked in spare sequence ids for the next chat turn;
- `pages.py`: the memory behind cells no sequence holds goes back to the OS;
- `engine/memory.py`: how many cells each stream gets.

A sequence never holds more than `n_ctx_seq` positions, which is the engine's `max_model_len`.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os

import llama_cpp as llama
import torch

from streamchat.engine.contracts import PrefillPlan
from streamchat.engine.llamacpp.batch import INVARIANT_ROW_CHUNK, BatchWriter, needs_company
from streamchat.engine.llamacpp.cache import LlamaCppCache
from streamchat.engine.llamacpp.model import LlamaModel
from streamchat.engine.llamacpp.pages import KvPages, Layout, anonymous_ranges, locate
from streamchat.engine.llamacpp.prefill import TILED_FROM, invariant_plan
from streamchat.engine.llamacpp.prefixes import ParkedPrefixes
from streamchat.engine.memory import CELL_STEP, round_up

log = logging.getLogger(__name__)

LLAMA_MAX_SEQ = 256  # sequence ids (rows and parked prefixes) one context can hold


class LlamaCppRunner:
    """`n_ctx_seq` is each sequence's capacity in positions (llama.cpp rounds it up to 256s; read the
    result back from `self.n_ctx_seq`). `park_slots` spare sequence ids hold finished prefixes for
    reuse (0: no prefix reuse, `prefixes` is None), `park_tokens` tokens in all at most."""

    def __init__(
        self,
        model: LlamaModel,
        n_ctx_seq: int,
        max_num_seqs: int,
        max_batch_tokens: int,
        threads: int | None = None,
        park_slots: int = 0,
        batch_invariant: bool = True,
        park_tokens: int | None = None,
    ) -> None:
        if max_num_seqs + park_slots > LLAMA_MAX_SEQ:
            raise ValueError(
                f"{max_num_seqs} rows and {park_slots} parked prefixes need more than llama.cpp's "
                f"{LLAMA_MAX_SEQ} sequences: lower max_num_seqs"
            )
        if max_batch_tokens < max_num_seqs:
            raise ValueError(f"a batch of {max_batch_tokens} tokens cannot decode {max_num_seqs} rows at once")
        max_batch_tokens = max(max_batch_tokens, 2 * TILED_FROM)  # room for the smallest tiled prefill
        self.model = model
        self.vocab_size = model.n_vocab
        threads = threads or os.cpu_count() or 1
        n_seq_max = max_num_seqs + park_slots
        params = llama.llama_context_default_params()
        params.n_seq_max = n_seq_max
        params.n_ctx = n_seq_max * round_up(n_ctx_seq, CELL_STEP)
        params.n_batch = params.n_ubatch = max_batch_tokens  # a decode of every row is one ubatch
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        params.kv_unified = False  # one stream of cells per sequence
        before = anonymous_ranges()
        self.ctx = llama.llama_init_from_model(model.ptr, params)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not create a context of {n_seq_max} × {n_ctx_seq} cells")
        self.n_ctx_seq = _n_ctx_seq(self.ctx, n_seq_max)
        self.batch_invariant = batch_invariant
        self.max_row_chunk: int | None = INVARIANT_ROW_CHUNK if batch_invariant else None
        self.prefill_plan: PrefillPlan | None = invariant_plan if batch_invariant else None
        self.cache = LlamaCppCache(self.ctx, max_num_seqs, n_seq_max)
        self.prefixes: ParkedPrefixes | None = (
            ParkedPrefixes(self.cache, max_num_seqs, park_slots, park_tokens) if park_slots else None
        )
        self._batch = BatchWriter(max_batch_tokens)
        self.cache.pages = self._find_pages(before, n_seq_max)
        log.info(
            "llama.cpp context: (%d rows + %d parked prefixes) × %d cells (%.0f MiB of address space, %s), "
            "batch %d, %d threads",
            max_num_seqs,
            park_slots,
            self.n_ctx_seq,
            n_seq_max * self.n_ctx_seq * model.kv_bytes_per_token / 2**20,
            "resident as used" if self.cache.pages else "all resident",
            max_batch_tokens,
            threads,
        )

    @property
    def pages_released(self) -> bool:
        """Whether memory follows the tokens held (False: every cell stays resident)."""
        return self.cache.pages is not None

    def _find_pages(self, before: list[tuple[int, int]], n_seq_max: int) -> KvPages | None:
        """Write one probe token into row 0, find its keys and values in memory, then empty it."""
        n_tensors = 2 * self.model.n_layer
        shape = Layout(0, self.model.kv_bytes_per_token // n_tensors, self.n_ctx_seq, n_seq_max, n_tensors)
        self._batch.fill(0, [[self.model.probe_token]], [0], company=False)
        self._decode()
        size = llama.llama_state_seq_get_size(self.ctx, 0)
        saved = (ctypes.c_uint8 * size)()
        llama.llama_state_seq_get_data(self.ctx, saved, size, 0)
        layout = locate(before, anonymous_ranges(), shape, 0, bytes(saved))
        self.cache.forget(0)
        if layout is None:
            log.warning("could not find llama.cpp's KV cells in memory: every cell stays resident")
            return None
        return KvPages(layout)

    def pads_lone_row(self, start: int) -> bool:
        """Whether one row decoding one token at `start`, alone, is fed a throwaway second query."""
        return self.batch_invariant and self.max_batch_tokens > 1 and needs_company([[0]], [start], self.n_ctx_seq)

    @property
    def max_batch_tokens(self) -> int:
        return self._batch.capacity

    def forward(self, first_row: int, chunks: list[list[int]], starts: list[int]) -> torch.Tensor:
        """Feed `chunks[i]` to row `first_row+i` from position `starts[i]`; logits: [rows, vocab]."""
        return self._forward(first_row, chunks, starts, every=False)

    def forward_all(self, first_row: int, chunks: list[list[int]], starts: list[int]) -> torch.Tensor:
        """As `forward`, with logits at every position fed (to check drafts): [tokens, vocab], row
        after row. Each chunk should stay under 64 tokens, so its positions are computed as decode
        steps compute them."""
        return self._forward(first_row, chunks, starts, every=True)

    def _forward(self, first_row: int, chunks: list[list[int]], starts: list[int], every: bool) -> torch.Tensor:
        rows = range(first_row, first_row + len(chunks))
        self._check_fits(rows, chunks, starts)
        for row, start in zip(rows, starts, strict=True):
            self.cache.truncate(row, start)
        company = self.batch_invariant and self.max_batch_tokens > 1 and needs_company(chunks, starts, self.n_ctx_seq)
        outputs = self._batch.fill(first_row, chunks, starts, company, every)
        self._decode()
        for row, chunk, start in zip(rows, chunks, starts, strict=True):
            self.cache.lens[row] = start + len(chunk)
            self.cache.wrote(row, start + len(chunk) + company)
        if company:  # drop the throwaway query's cell
            self.cache.lens[first_row] += 1
            self.cache.truncate(first_row, starts[0] + 1)
        return self._logits(outputs)

    def _check_fits(self, rows: range, chunks: list[list[int]], starts: list[int]) -> None:
        """Refuse before llama.cpp sees it: a failed decode would clear every row's cells."""
        n_tokens = sum(len(c) for c in chunks)
        if n_tokens > self.max_batch_tokens:
            raise ValueError(f"{n_tokens} tokens in one forward; the batch holds {self.max_batch_tokens}")
        for row, chunk, start in zip(rows, chunks, starts, strict=True):
            if start + len(chunk) > self.n_ctx_seq:
                raise ValueError(f"row {row} would hold {start + len(chunk)} positions, its stream {self.n_ctx_seq}")

    def _decode(self) -> None:
        rc = llama.llama_decode(self.ctx, self._batch.batch)
        if rc != 0:
            self.cache.clear()
            if self.prefixes is not None:
                self.prefixes.forget_all()
            raise RuntimeError(f"llama_decode failed with code {rc} ({self._batch.batch.n_tokens} tokens)")

    def _logits(self, outputs: list[int]) -> torch.Tensor:
        """Copy each output's logits (float32 in llama.cpp's buffer) once, into one tensor."""
        out = torch.empty(len(outputs), self.vocab_size, dtype=torch.float32)  # [rows, vocab]
        row_bytes = self.vocab_size * 4
        base = out.data_ptr()
        for r, idx in enumerate(outputs):
            src = llama.llama_get_logits_ith(self.ctx, idx)
            if not src:
                raise RuntimeError(f"llama.cpp has no logits for batch index {idx}")
            ctypes.memmove(base + r * row_bytes, src, row_bytes)
        return out

    def close(self) -> None:
        """Free the context (its KV cells); the model stays loaded for other contexts."""
        if getattr(self, "ctx", None):
            self._batch.free()
            llama.llama_free(self.ctx)
            self.ctx = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit the bindings may be gone
            self.close()


def _n_ctx_seq(ctx: llama.llama_context_p, n_seq_max: int) -> int:
    """Cells per sequence stream, as llama.cpp sized them."""
    if hasattr(llama, "llama_n_ctx_seq"):
        return llama.llama_n_ctx_seq(ctx)
    return llama.llama_n_ctx(ctx) // n_seq_max
