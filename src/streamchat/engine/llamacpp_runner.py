"""Forward passes of a GGUF model through llama.cpp, behind the same interface as `TransformersRunner`.

The engine (scheduler, sampler, detokenizer, stop strings) stays the same; only the forward and
the cache change. Each engine row is one llama.cpp sequence id, and llama.cpp's KV cache is
*unified*: every sequence's cells live in one pool of `n_ctx` cells, so the engine's cache budget
in tokens is `n_ctx` itself, and moving a sequence between rows only re-tags its cells
(`seq_cp` + `seq_rm`), no keys or values are copied.

Every forward is one `llama_batch`: each row's chunk at positions `start..start+n-1` tagged with
that row's sequence id, logits asked for only at each row's last token.

Finished sequences can be *parked* under spare sequence ids (a few, bounded in tokens), so the
next turn of the same chat copies the shared prefix's cells into its row instead of prefilling it.
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

# ggml's CPU flash attention switches to a tiled kernel (different rounding) at 64 queries per
# ubatch, so a prompt prefilled next to others would get other numbers than alone. Below that,
# every query row is computed the same way whatever shares its ubatch: greedy answers do not
# depend on the batch. (A lone decode row over >= 512 cells takes a split-KV kernel: rounding
# can then still differ from the same row decoded next to others.)
INVARIANT_UBATCH = 63
_MIN_REUSE = 8  # a shorter shared prefix is not worth the bookkeeping
_PARK_SHARE = 4  # parked sequences may hold at most 1/4 of the cache's cells


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


class LlamaCppCache:
    """Row bookkeeping over llama.cpp's memory: the protocol `Scheduler` drives (`move_row`, …).

    `lens[row]` mirrors how many positions the row holds, so a forward that restarts a row at an
    earlier position (a preempted or reused row) first drops the stale tail.
    """

    def __init__(self, ctx: llama.llama_context_p, n_rows: int, n_ctx: int, bytes_per_token: int, park_slots: int):
        self._mem = llama.llama_get_memory(ctx)
        self.n_rows = n_rows
        self.n_ctx = n_ctx
        self.bytes_per_token = bytes_per_token
        self.lens = [0] * n_rows
        self._scratch = n_rows  # seq id used to swap two rows
        self._free_park_ids = list(range(n_rows + 1, n_rows + 1 + park_slots))
        self.parked: list[_Parked] = []
        self._clock = 0

    # -- the scheduler's protocol --------------------------------------------------------------
    def reserve(self, rows: int, length: int) -> None:
        """Nothing to grow: llama.cpp allocated all `n_ctx` cells when the context was made."""

    def move_row(self, src: int, dst: int) -> None:
        n = self.lens[src]
        self._drop(dst)
        if n:
            llama.llama_memory_seq_cp(self._mem, src, dst, -1, -1)
            self._drop(src)
        self.lens[dst] = n

    def swap_rows(self, a: int, b: int) -> None:
        if not (self.lens[a] or self.lens[b]):
            return
        s = self._scratch
        llama.llama_memory_seq_rm(self._mem, s, -1, -1)
        llama.llama_memory_seq_cp(self._mem, a, s, -1, -1)
        llama.llama_memory_seq_rm(self._mem, a, -1, -1)
        llama.llama_memory_seq_cp(self._mem, b, a, -1, -1)
        llama.llama_memory_seq_rm(self._mem, b, -1, -1)
        llama.llama_memory_seq_cp(self._mem, s, b, -1, -1)
        llama.llama_memory_seq_rm(self._mem, s, -1, -1)
        self.lens[a], self.lens[b] = self.lens[b], self.lens[a]

    def release(self) -> None:
        """The server went idle: free the rows' cells but keep parked prefixes for the next turn.

        llama.cpp's memory is allocated once, so there is nothing to hand back to the OS here.
        """
        for row in range(self.n_rows):
            self._drop(row)

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

    # -- prefix reuse --------------------------------------------------------------------------
    @property
    def parked_tokens(self) -> int:
        return sum(len(p.tokens) for p in self.parked)

    def park(self, row: int, tokens: list[int]) -> None:
        """Keep the cells of `row` (holding `tokens`) under a spare id after its sequence ends."""
        n = min(len(tokens), self.lens[row])
        if n < _MIN_REUSE or n > self.n_ctx // _PARK_SHARE:
            return
        tokens = tokens[:n]
        # the same chat, one turn further on, replaces its earlier turn
        for p in [p for p in self.parked if tokens[: len(p.tokens)] == p.tokens]:
            self._unpark(p)
        while self.parked and (not self._free_park_ids or self.parked_tokens + n > self.n_ctx // _PARK_SHARE):
            self._unpark(min(self.parked, key=lambda p: p.last_used))
        if not self._free_park_ids:
            return
        seq_id = self._free_park_ids.pop()
        llama.llama_memory_seq_cp(self._mem, row, seq_id, 0, n)
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
        self._drop(row)
        llama.llama_memory_seq_cp(self._mem, best.seq_id, row, 0, best_len)
        self.lens[row] = best_len
        self._clock += 1
        best.last_used = self._clock
        return best_len

    def drop_parked(self) -> bool:
        """Give parked cells back (the live rows need them); False when there were none."""
        had = bool(self.parked)
        for p in list(self.parked):
            self._unpark(p)
        return had

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
    """`forward(first_row, chunks, starts) -> logits [rows, vocab]` on a llama.cpp context."""

    def __init__(
        self,
        model: LlamaModel,
        n_ctx: int,
        max_num_seqs: int,
        max_batch_tokens: int,
        threads: int | None = None,
        park_slots: int = 4,
        batch_invariant: bool = True,
    ) -> None:
        self.model = model
        self.vocab_size = model.n_vocab
        self.device = torch.device("cpu")
        threads = threads or os.cpu_count() or 1
        params = llama.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_seq_max = max_num_seqs + 1 + park_slots  # rows, the swap scratch, parked prefixes
        params.n_batch = max_batch_tokens
        params.n_ubatch = min(max_batch_tokens, INVARIANT_UBATCH) if batch_invariant else max_batch_tokens
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        if hasattr(params, "kv_unified"):
            params.kv_unified = True  # one pool of cells shared by all sequences: seq_cp only re-tags
        self.ctx = llama.llama_init_from_model(model.ptr, params)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp could not create a context of {n_ctx} tokens")
        self.n_ctx = llama.llama_n_ctx(self.ctx)
        self.max_batch_tokens = max_batch_tokens
        self.cache = LlamaCppCache(self.ctx, max_num_seqs, self.n_ctx, model.kv_bytes_per_token, park_slots)
        self._batch = llama.llama_batch_init(max_batch_tokens, 0, 1)
        log.info(
            "llama.cpp context: %d cells, %d rows, batch %d, %d threads",
            self.n_ctx,
            max_num_seqs,
            max_batch_tokens,
            threads,
        )

    def forward(self, first_row: int, chunks: list[list[int]], starts: list[int]) -> torch.Tensor:
        """Feed `chunks[i]` to row `first_row+i` from position `starts[i]`; logits: [rows, vocab]."""
        b = self._batch
        outputs: list[int] = []  # batch index of each row's last token
        i = 0
        for r, (chunk, start) in enumerate(zip(chunks, starts, strict=True)):
            row = first_row + r
            self.cache.truncate(row, start)
            for j, tok in enumerate(chunk):
                b.token[i] = tok
                b.pos[i] = start + j
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = row
                b.logits[i] = 0
                i += 1
            b.logits[i - 1] = 1
            outputs.append(i - 1)
        if i > self.max_batch_tokens:
            raise ValueError(f"{i} tokens in one forward; the batch holds {self.max_batch_tokens}")
        b.n_tokens = i
        self._decode()
        for r, (chunk, start) in enumerate(zip(chunks, starts, strict=True)):
            self.cache.lens[first_row + r] = start + len(chunk)
        return self._logits(outputs)

    def _decode(self) -> None:
        rc = llama.llama_decode(self.ctx, self._batch)
        if rc == 1 and self.cache.drop_parked():  # no free cells: parked prefixes make way
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
