"""Forward passes of a GGUF model through llama.cpp, behind the same interface as `TransformersRunner`.

The engine (scheduler, sampler, detokenizer, stop strings) stays the same; only the forward and
the cache change. Each engine row is one llama.cpp sequence id, and each sequence id has a KV
stream of its own (`kv_unified = False`): `n_ctx_seq` cells no other sequence uses. So

- a decode query attends over its own sequence's cells only, not over every running sequence's;
- a sequence's cells always sit at cells 0..n-1 of its stream, in position order, whatever its
  neighbours do: flash attention sums them in the same order as when the sequence runs alone;
- a sequence never holds more than `n_ctx_seq` positions, which is the engine's `max_model_len`.

Moving a sequence to another row copies the cells it holds (llama.cpp's per-sequence state, not
the whole stream) into the destination row's stream.

Every forward is one `llama_batch`: each row's chunk at positions `start..start+n-1` tagged with
that row's sequence id, rows in ascending order (llama.cpp groups only consecutive sequence ids
into one ubatch), logits asked for only at each row's last token.

Finished sequences can be *parked* in spare sequence ids, each in its own stream, so the next turn
of the same chat copies the shared prefix's cells into its row instead of prefilling it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import llama_cpp as llama
import torch

log = logging.getLogger(__name__)

# ggml's CPU flash attention computes a query row by the same arithmetic whatever else is in the
# ubatch, except in two cases: a tiled kernel (other rounding) once a ubatch holds 64 queries of one
# stream, and a split-KV kernel for a lone query (one stream, one token) over >= 512 cells. With
# `batch_invariant` a row feeds at most 63 tokens per forward, and a lone one-token forward past 256
# cells gets a throwaway second query: greedy answers then do not depend on the batch.
INVARIANT_ROW_CHUNK = 63
_SPLIT_KV_FROM = 256  # llama.cpp pads the cells attended to 256s: past 256 a lone query sees >= 512
CELL_STEP = 256  # llama.cpp rounds each stream's cells up to a multiple of this
LLAMA_MAX_SEQ = 256  # sequence ids (rows and parked prefixes) one context can hold
_MIN_REUSE = 8  # a shorter shared prefix is not worth the bookkeeping
PARK_SLOTS = 4  # finished chats whose cells are kept for their next turn
DEFAULT_CONTEXT = 2048  # positions per sequence unless max_model_len or cache_tokens say otherwise
_MIN_SHRUNK_CONTEXT = 512  # a memory cap never shrinks a sequence's capacity below this


def _quiet_llama_logs(verbose: bool) -> None:
    """llama.cpp logs every tensor at load; keep its errors only unless debugging."""
    from llama_cpp import _logger

    _logger.set_verbose(verbose)


class LlamaModel:
    """The weights of a GGUF file, loaded once (mmap), shared by the context that runs them."""

    def __init__(self, path: Path, verbose: bool = False) -> None:
        _quiet_llama_logs(verbose)
        llama.llama_backend_init()
        params = llama.llama_model_default_params()
        self.ptr = llama.llama_model_load_from_file(str(path).encode(), params)
        if not self.ptr:
            raise RuntimeError(f"llama.cpp could not load {path}")
        self.path = path
        self.vocab = llama.llama_model_get_vocab(self.ptr)
        self.n_vocab = llama.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = llama.llama_model_n_ctx_train(self.ptr)

    @property
    def kv_bytes_per_token(self) -> int:
        """f16 keys and values for every layer (llama.cpp's default cache type)."""
        m = self.ptr
        head_dim = llama.llama_model_n_embd(m) // llama.llama_model_n_head(m)
        return 2 * llama.llama_model_n_layer(m) * llama.llama_model_n_head_kv(m) * head_dim * 2

    def eog_token_ids(self) -> set[int]:
        """Every token llama.cpp itself treats as end of generation (EOS, EOT, `<|im_end|>`…)."""
        return {t for t in range(self.n_vocab) if llama.llama_vocab_is_eog(self.vocab, t)}

    def tokenize(self, text: str, special: bool = True) -> list[int]:
        data = text.encode()
        buf = (llama.llama_token * (len(data) + 8))()
        n = llama.llama_tokenize(self.vocab, data, len(data), buf, len(buf), False, special)
        if n < 0:
            raise ValueError(f"llama_tokenize failed ({n})")
        return list(buf[:n])

    def close(self) -> None:
        if self.ptr:
            llama.llama_model_free(self.ptr)
            self.ptr = None


@dataclass
class _Parked:
    seq_id: int
    tokens: list[int]
    last_used: int = 0


class _HostBuffer:
    """A reusable host buffer for one sequence's state (it grows, never shrinks)."""

    def __init__(self) -> None:
        self.data = (ctypes.c_uint8 * 0)()

    def at_least(self, size: int) -> ctypes.Array:
        if len(self.data) < size:
            self.data = (ctypes.c_uint8 * max(size, 2 * len(self.data)))()
        return self.data


class LlamaCppCache:
    """Row bookkeeping over llama.cpp's memory: the protocol `Scheduler` drives (`move_row`, …).

    `lens[row]` mirrors how many positions the row holds, so a forward that restarts a row at an
    earlier position (a preempted or reused row) first drops the stale tail.
    """

    def __init__(self, ctx: llama.llama_context_p, n_rows: int, park_slots: int) -> None:
        self._ctx = ctx
        self._mem = llama.llama_get_memory(ctx)
        self.n_rows = n_rows
        self.lens = [0] * n_rows
        self._free_park_ids = list(range(n_rows, n_rows + park_slots))
        self.parked: list[_Parked] = []
        self._clock = 0
        self._bufs = (_HostBuffer(), _HostBuffer())

    # -- the scheduler's protocol --------------------------------------------------------------
    def set_limits(self, max_rows: int, max_tokens: int) -> None:
        """Nothing to limit: every stream was sized when the context was made."""

    def reserve(self, rows: int, length: int) -> None:
        """Nothing to grow: llama.cpp allocated every stream when the context was made."""

    def move_row(self, src: int, dst: int) -> None:
        n = self.lens[src]
        if n:
            self._copy(src, dst)
        else:
            self._drop(dst)
        self.lens[dst] = n
        self._drop(src)

    def swap_rows(self, a: int, b: int) -> None:
        na, nb = self.lens[a], self.lens[b]
        if not (na or nb):
            return
        saved_a = self._save(a, self._bufs[0]) if na else 0
        saved_b = self._save(b, self._bufs[1]) if nb else 0
        self._place(a, self._bufs[1], saved_b)
        self._place(b, self._bufs[0], saved_a)
        self.lens[a], self.lens[b] = nb, na

    def release(self) -> None:
        """The server went idle: free the rows' cells but keep parked prefixes for the next turn.

        llama.cpp's memory is allocated once, so there is nothing to hand back to the OS here.
        Every row is emptied, whatever `lens` says, so a move that failed half-way leaves nothing.
        """
        for row in range(self.n_rows):
            llama.llama_memory_seq_rm(self._mem, row, -1, -1)
        self.lens = [0] * self.n_rows

    def stored(self, row: int) -> int:
        """Positions llama.cpp itself holds for `row` (to check `lens` against)."""
        return llama.llama_memory_seq_pos_max(self._mem, row) + 1

    # -- used by the runner --------------------------------------------------------------------
    def truncate(self, row: int, length: int) -> None:
        """Make `row` hold exactly positions `0..length-1` before new tokens are written after them."""
        if self.lens[row] > length:
            llama.llama_memory_seq_rm(self._mem, row, length, -1)
            self.lens[row] = length

    def clear(self) -> None:
        """After a failed decode nothing stored can be trusted, parked prefixes included."""
        llama.llama_memory_clear(self._mem, False)
        self.lens = [0] * self.n_rows
        self._free_park_ids += [p.seq_id for p in self.parked]
        self.parked.clear()

    def _drop(self, row: int) -> None:
        if self.lens[row]:
            llama.llama_memory_seq_rm(self._mem, row, -1, -1)
            self.lens[row] = 0

    # -- copying a sequence's cells between streams ----------------------------------------------
    def _copy(self, src: int, dst: int, length: int | None = None) -> None:
        """Make `dst` hold `src`'s cells (the first `length` positions only, when given)."""
        self._place(dst, self._bufs[0], self._save(src, self._bufs[0]))
        if length is not None:
            llama.llama_memory_seq_rm(self._mem, dst, length, -1)

    def _save(self, seq_id: int, buf: _HostBuffer) -> int:
        size = llama.llama_state_seq_get_size(self._ctx, seq_id)
        written = llama.llama_state_seq_get_data(self._ctx, buf.at_least(size), size, seq_id) if size else 0
        if not written:
            raise RuntimeError(f"llama.cpp could not save the cells of sequence {seq_id}")
        return written

    def _place(self, seq_id: int, buf: _HostBuffer, size: int) -> None:
        """Replace `seq_id`'s cells by a saved state (none when `size` is 0); they land at 0..n-1."""
        if not size:
            llama.llama_memory_seq_rm(self._mem, seq_id, -1, -1)
        elif not llama.llama_state_seq_set_data(self._ctx, buf.data, size, seq_id):
            llama.llama_memory_seq_rm(self._mem, seq_id, -1, -1)
            raise RuntimeError(f"llama.cpp could not place saved cells in sequence {seq_id}")

    # -- prefix reuse --------------------------------------------------------------------------
    def park(self, row: int, tokens: list[int]) -> None:
        """Copy the cells of `row` (holding `tokens`) into a spare sequence id after its sequence ends."""
        n = min(len(tokens), self.lens[row])
        if n < _MIN_REUSE or not (self._free_park_ids or self.parked):
            return
        tokens = tokens[:n]
        # the same chat, one turn further on, replaces its earlier turn
        for p in [p for p in self.parked if tokens[: len(p.tokens)] == p.tokens]:
            self._unpark(p)
        if not self._free_park_ids:
            self._unpark(min(self.parked, key=lambda p: p.last_used))
        seq_id = self._free_park_ids.pop()
        self._copy(row, seq_id, n)
        self._clock += 1
        self.parked.append(_Parked(seq_id, tokens, self._clock))

    def reuse_prefix(self, row: int, tokens: list[int]) -> int:
        """Copy the longest parked prefix of `tokens` into `row`; return its length (< len(tokens))."""
        best, best_len = None, 0
        for p in self.parked:
            n = _common_prefix(p.tokens, tokens)
            if n > best_len:
                best, best_len = p, n
        best_len = min(best_len, len(tokens) - 1)  # the last prompt token must be fed for its logits
        if best is None or best_len < _MIN_REUSE:
            return 0
        self._copy(best.seq_id, row, best_len)
        self.lens[row] = best_len
        self._clock += 1
        best.last_used = self._clock
        return best_len

    def _unpark(self, p: _Parked) -> None:
        llama.llama_memory_seq_rm(self._mem, p.seq_id, -1, -1)
        self.parked.remove(p)
        self._free_park_ids.append(p.seq_id)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class LlamaCppRunner:
    """`forward(first_row, chunks, starts) -> logits [rows, vocab]` on a llama.cpp context.

    `n_ctx_seq` is each sequence's capacity in positions (llama.cpp rounds it up to 256s; read the
    result back from `self.n_ctx_seq`). `max_row_chunk` is the most tokens a row may feed in one
    forward (None: no limit); the engine's prefill respects it.
    """

    def __init__(
        self,
        model: LlamaModel,
        n_ctx_seq: int,
        max_num_seqs: int,
        max_batch_tokens: int,
        threads: int | None = None,
        park_slots: int = PARK_SLOTS,
        batch_invariant: bool = True,
    ) -> None:
        if max_num_seqs + park_slots > LLAMA_MAX_SEQ:
            raise ValueError(
                f"{max_num_seqs} rows and {park_slots} parked prefixes need more than llama.cpp's "
                f"{LLAMA_MAX_SEQ} sequences: lower max_num_seqs"
            )
        if max_batch_tokens < max_num_seqs:
            raise ValueError(f"a batch of {max_batch_tokens} tokens cannot decode {max_num_seqs} rows at once")
        self.model = model
        self.vocab_size = model.n_vocab
        self.device = torch.device("cpu")
        threads = threads or os.cpu_count() or 1
        n_seq_max = max_num_seqs + park_slots
        params = llama.llama_context_default_params()
        params.n_seq_max = n_seq_max
        params.n_ctx = n_seq_max * _round_up(n_ctx_seq, CELL_STEP)
        params.n_batch = params.n_ubatch = max_batch_tokens  # a decode of every row is one ubatch
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        params.kv_unified = False  # one stream of cells per sequence
        self.ctx = llama.llama_init_from_model(model.ptr, params)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not create a context of {n_seq_max} × {n_ctx_seq} cells")
        self.n_ctx_seq = _n_ctx_seq(self.ctx, n_seq_max)
        self.max_batch_tokens = max_batch_tokens
        self.batch_invariant = batch_invariant
        self.max_row_chunk: int | None = INVARIANT_ROW_CHUNK if batch_invariant else None
        self.cache = LlamaCppCache(self.ctx, max_num_seqs, park_slots)
        self._batch = llama.llama_batch_init(max_batch_tokens, 0, 1)
        log.info(
            "llama.cpp context: (%d rows + %d parked prefixes) × %d cells (%.0f MiB), batch %d, %d threads",
            max_num_seqs,
            park_slots,
            self.n_ctx_seq,
            n_seq_max * self.n_ctx_seq * model.kv_bytes_per_token / 2**20,
            max_batch_tokens,
            threads,
        )

    def forward(self, first_row: int, chunks: list[list[int]], starts: list[int]) -> torch.Tensor:
        """Feed `chunks[i]` to row `first_row+i` from position `starts[i]`; logits: [rows, vocab]."""
        rows = range(first_row, first_row + len(chunks))
        self._check_fits(rows, chunks, starts)
        b = self._batch
        outputs: list[int] = []  # batch index of each row's last token
        i = 0
        for row, chunk, start in zip(rows, chunks, starts, strict=True):
            self.cache.truncate(row, start)
            for j, tok in enumerate(chunk):
                _put(b, i, tok, start + j, row)
                i += 1
            b.logits[i - 1] = 1
            outputs.append(i - 1)
        company = self._lone_query_needs_company(chunks, starts)
        if company:  # a second query of the same row: no logits, its cell is dropped below
            _put(b, i, chunks[0][0], starts[0] + 1, first_row)
            i += 1
        b.n_tokens = i
        self._decode()
        for row, chunk, start in zip(rows, chunks, starts, strict=True):
            self.cache.lens[row] = start + len(chunk)
        if company:
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

    def _lone_query_needs_company(self, chunks: list[list[int]], starts: list[int]) -> bool:
        """One row, one token, past 256 cells: alone it would take the split-KV kernel."""
        return (
            self.batch_invariant
            and len(chunks) == 1
            and len(chunks[0]) == 1
            and self.max_batch_tokens > 1
            and _SPLIT_KV_FROM <= starts[0] < self.n_ctx_seq - 1
        )

    def _decode(self) -> None:
        rc = llama.llama_decode(self.ctx, self._batch)
        if rc != 0:
            self.cache.clear()
            raise RuntimeError(f"llama_decode failed with code {rc} ({self._batch.n_tokens} tokens)")

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

    # -- prefix reuse (see LlamaCppCache) ------------------------------------------------------
    def reuse_prefix(self, row: int, token_ids: list[int]) -> int:
        return self.cache.reuse_prefix(row, token_ids)

    def park(self, row: int, token_ids: list[int]) -> None:
        self.cache.park(row, token_ids)

    def close(self) -> None:
        """Free the context (its KV cells); the model stays loaded for other contexts."""
        if getattr(self, "ctx", None):
            llama.llama_batch_free(self._batch)
            llama.llama_free(self.ctx)
            self.ctx = None

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter exit the bindings may be gone
            self.close()


def cells_per_sequence(n_seq_ids: int, context: int, longest: int, cache_tokens: int | None, ram_tokens: int) -> int:
    """Each sequence's capacity in positions (its stream's cells), for `n_seq_ids` sequence ids.

    `context` positions each by default; with `cache_tokens` (all cells together) an even share of
    it in 256s, up to `longest`; without it, shrunk (not below 512) until all streams fit in
    `ram_tokens` cells.
    """
    if cache_tokens is not None:
        share = cache_tokens // n_seq_ids // CELL_STEP * CELL_STEP
        if share < CELL_STEP:
            raise ValueError(
                f"cache_tokens={cache_tokens} leaves each of the {n_seq_ids} sequences (rows and parked prefixes) "
                f"fewer than {CELL_STEP} positions: give at least {n_seq_ids * CELL_STEP} or lower max_num_seqs"
            )
        return min(share, longest)
    if n_seq_ids * context <= ram_tokens:
        return context
    fit = max(_MIN_SHRUNK_CONTEXT, ram_tokens // n_seq_ids // CELL_STEP * CELL_STEP)
    if fit < context:
        log.warning(
            "%d sequences × %d positions would not fit in the memory share for the KV cache "
            "(%d cells): each sequence holds %d positions instead",
            n_seq_ids,
            context,
            ram_tokens,
            fit,
        )
    return min(fit, context)


def _put(b: llama.llama_batch, i: int, token: int, pos: int, seq_id: int) -> None:
    b.token[i] = token
    b.pos[i] = pos
    b.n_seq_id[i] = 1
    b.seq_id[i][0] = seq_id
    b.logits[i] = 0


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def _n_ctx_seq(ctx: llama.llama_context_p, n_seq_max: int) -> int:
    """Cells per sequence stream, as llama.cpp sized them."""
    if hasattr(llama, "llama_n_ctx_seq"):
        return llama.llama_n_ctx_seq(ctx)
    return llama.llama_n_ctx(ctx) // n_seq_max
