"""Rows over llama.cpp's memory: the `RowCache` the scheduler drives.

Each engine row is one llama.cpp sequence id with a KV stream of its own (`kv_unified = False`),
so a sequence's cells sit at 0..n-1 of its stream whatever its neighbours do. Moving a sequence to
another row copies the cells it holds (llama.cpp's per-sequence state, not the whole stream) into
the destination's stream, through a host buffer. llama.cpp reserved every stream when the context
was made; with `KvPages` (pages.py) the memory behind a stream's cells is handed back whenever the
sequence gives them up, so what is resident follows the tokens held.
"""

from __future__ import annotations

import ctypes

import llama_cpp as llama

from streamchat.engine.llamacpp.pages import KvPages

RELEASE_SLACK = 64  # a row shortened by fewer cells keeps their pages (a decode drops one cell a step)


class _HostBuffer:
    """A reusable host buffer for one sequence's state (it grows, never shrinks)."""

    def __init__(self) -> None:
        self.data = (ctypes.c_uint8 * 0)()

    def at_least(self, size: int) -> ctypes.Array:
        if len(self.data) < size:
            self.data = (ctypes.c_uint8 * max(size, 2 * len(self.data)))()
        return self.data


class LlamaCppCache:
    """`lens[row]` mirrors how many positions the row holds, so a forward that restarts a row at an
    earlier position (a preempted or reused row) first drops the stale tail (`truncate`)."""

    def __init__(self, ctx: llama.llama_context_p, n_rows: int, n_seq_ids: int | None = None) -> None:
        self._ctx = ctx
        self._mem = llama.llama_get_memory(ctx)
        self.n_rows = n_rows
        self.lens = [0] * n_rows
        self._bufs = (_HostBuffer(), _HostBuffer())
        self.pages: KvPages | None = None  # set by the runner once it found the cells
        self._written = [0] * (n_seq_ids or n_rows)  # per sequence id: cells that may still be resident

    # -- RowCache ------------------------------------------------------------------------------
    def move_row(self, src: int, dst: int) -> None:
        n = self.lens[src]
        if n:
            self.copy(src, dst)
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
        self._settle(a, nb)
        self._settle(b, na)

    def release(self) -> None:
        """Empty every row, whatever `lens` says, so a move that failed half-way leaves nothing.

        Other sequence ids (parked prefixes) keep their cells for the next turn.
        """
        for row in range(self.n_rows):
            llama.llama_memory_seq_rm(self._mem, row, -1, -1)
            self._settle(row, 0, slack=-1)
        self.lens = [0] * self.n_rows

    # -- used by the runner and the prefix store -----------------------------------------------
    def truncate(self, row: int, length: int) -> None:
        """Make `row` hold exactly positions `0..length-1` before new tokens are written after them."""
        if self.lens[row] > length:
            llama.llama_memory_seq_rm(self._mem, row, length, -1)
            self.lens[row] = length
            self._settle(row, length)

    def wrote(self, seq_id: int, end: int) -> None:
        """A forward wrote cells up to `end` (excluded) of `seq_id`'s stream."""
        self._written[seq_id] = max(self._written[seq_id], end)

    def clear(self) -> None:
        """After a failed decode nothing stored can be trusted, in any sequence id."""
        llama.llama_memory_clear(self._mem, False)
        self.lens = [0] * self.n_rows
        if self.pages is not None:
            self.pages.release_all()
        self._written = [0] * len(self._written)

    def forget(self, seq_id: int) -> None:
        """Drop every cell of `seq_id` (a row or a parked prefix)."""
        llama.llama_memory_seq_rm(self._mem, seq_id, -1, -1)
        self._settle(seq_id, 0, slack=-1)

    def copy(self, src: int, dst: int, length: int | None = None) -> None:
        """Make sequence id `dst` hold `src`'s cells (the first `length` positions only, when given).

        Sequence ids past the rows (parked prefixes) are copied the same way; `lens` is the caller's.
        """
        self._place(dst, self._bufs[0], self._save(src, self._bufs[0]))
        if length is not None:
            llama.llama_memory_seq_rm(self._mem, dst, length, -1)
        self._settle(dst, self.held(dst))

    def held(self, seq_id: int) -> int:
        """Positions llama.cpp holds for `seq_id` (its cells are 0..n-1 of its stream)."""
        return llama.llama_memory_seq_pos_max(self._mem, seq_id) + 1

    def _settle(self, seq_id: int, held: int, slack: int = RELEASE_SLACK) -> None:
        """`seq_id` now holds `held` cells: hand back the pages of those it wrote past them, unless
        they are at most `slack` (it is about to write them again; -1: always)."""
        written = max(self._written[seq_id], held)
        if self.pages is not None and written - held > slack:
            # an emptied stream goes back whole: attention may have read (mapped) past what was written
            self.pages.release(seq_id, held, written if held else self.pages.layout.cells)
            written = held
        self._written[seq_id] = written

    def _drop(self, row: int) -> None:
        if self.lens[row]:
            self.forget(row)
            self.lens[row] = 0

    def _save(self, seq_id: int, buf: _HostBuffer) -> int:
        size = llama.llama_state_seq_get_size(self._ctx, seq_id)
        written = llama.llama_state_seq_get_data(self._ctx, buf.at_least(size), size, seq_id) if size else 0
        if not written:
            raise RuntimeError(f"llama.cpp could not save the cells of sequence {seq_id}")
        return written

    def _place(self, seq_id: int, buf: _HostBuffer, size: int) -> None:
        """Replace `seq_id`'s cells by a saved state (none when `size` is 0); they land at 0..n-1."""
        if not size:
            self.forget(seq_id)
        elif not llama.llama_state_seq_set_data(self._ctx, buf.data, size, seq_id):
            self.forget(seq_id)
            raise RuntimeError(f"llama.cpp could not place saved cells in sequence {seq_id}")
