"""KV cells that cost memory only while they hold tokens.

llama.cpp allocates one stream of cells per sequence id when the context is made and writes zeros
over all of it, so every cell is resident from the start: 64 rows × 2048 cells of the embedded
model are 3 GiB before the first request. The streams themselves are what keeps a row's attention
cost and its numbers independent of its neighbours, so they stay; what changes is that their pages
are handed back to the kernel (`madvise(MADV_DONTNEED)`) at start and whenever a sequence gives up
cells. An anonymous page handed back reads as zeros again (what llama.cpp wrote) and costs no
memory until a token's keys or values are written into it, so resident memory follows the tokens
held and the streams' full length is only address space.

llama.cpp does not expose where the cells are, so `locate` finds them: the buffer is the one new
anonymous mapping made while the context was created whose size fits the cells, and the layout
assumed (per layer, keys then values, each `[row bytes, cells, streams]`) is checked against a
probe token's saved state before anything is handed back. If either fails, nothing is released and
the context simply holds all its cells, as before.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
from dataclasses import dataclass

log = logging.getLogger(__name__)

PAGE = mmap.PAGESIZE
_MADV_DONTNEED = 4
_MADV_NOHUGEPAGE = 15  # a 2 MiB huge page would make one token cost 2 MiB
_MMAPPED = 0x2  # glibc's flag in a chunk's size field for a chunk that is a mapping of its own
_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


Range = tuple[int, int]  # [start, end) of an address range


def anonymous_ranges() -> list[Range]:
    """This process's private writable mappings without a file behind them."""
    ranges = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 5 and parts[1] == "rw-p":
                start, end = (int(x, 16) for x in parts[0].split("-"))
                ranges.append((start, end))
    return ranges


def new_ranges(before: list[Range], after: list[Range]) -> list[Range]:
    """The parts of `after` that `before` did not cover (mappings that appeared in between)."""
    out = []
    for start, end in after:
        pieces = [(start, end)]
        for b0, b1 in before:
            pieces = [p for s, e in pieces for p in ((s, min(e, b0)), (max(s, b1), e)) if p[0] < p[1]]
        out += pieces
    return out


@dataclass(frozen=True)
class Layout:
    """Where llama.cpp keeps the cells: `n_tensors` tensors (keys and values of every layer) of
    `n_streams` streams × `cells` cells × `row` bytes, one after the other from `base`."""

    base: int
    row: int
    cells: int
    n_streams: int
    n_tensors: int

    @property
    def tensor_bytes(self) -> int:
        return self.row * self.cells * self.n_streams

    @property
    def size(self) -> int:
        return self.tensor_bytes * self.n_tensors

    def cell(self, tensor: int, stream: int, cell: int) -> int:
        return self.base + tensor * self.tensor_bytes + (stream * self.cells + cell) * self.row


def _u64(address: int) -> int:
    return ctypes.c_uint64.from_address(address).value


def candidates(ranges: list[Range], size: int) -> list[int]:
    """Addresses where a buffer of `size` bytes may start: glibc serves one that large from a mapping
    of its own, whose chunk header (size | MMAPPED) sits at the start of a page, the 64-aligned data
    right after it. Adjacent mappings merge in /proc/self/maps, so each range is walked chunk by
    chunk (a page at a time where no header is found)."""
    found = []
    for start, end in ranges:
        page = start
        while page + size <= end:
            head = _u64(page + 8)
            chunk = head & ~0x7
            if head & _MMAPPED and chunk % PAGE == 0 and page + chunk <= end:
                if chunk >= size + 64:
                    found += [page + 64, page + 16]
                page += chunk
            else:
                page += PAGE
    return found


def matches(layout: Layout, stream: int, saved: bytes) -> bool:
    """Whether the first cell of `stream` in every tensor holds bytes found in that stream's saved
    state (one token was written there), and its second cell is still zeros."""
    for tensor in range(layout.n_tensors):
        first = ctypes.string_at(layout.cell(tensor, stream, 0), layout.row)
        second = ctypes.string_at(layout.cell(tensor, stream, 1), layout.row)
        if not any(first) or any(second) or saved.find(first) < 0:
            return False
    return True


class KvPages:
    """Hands back the pages of cells a sequence no longer holds."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._advise(layout.base, layout.base + layout.size, _MADV_NOHUGEPAGE)
        self.release_all()

    def release(self, stream: int, first_cell: int, end_cell: int) -> None:
        """Cells `first_cell..end_cell-1` of `stream` hold nothing any more: hand back their whole
        pages (a page shared with a cell still held, or with another stream, stays)."""
        lay = self.layout
        for tensor in range(lay.n_tensors):
            self._advise(lay.cell(tensor, stream, first_cell), lay.cell(tensor, stream, end_cell), _MADV_DONTNEED)

    def release_all(self) -> None:
        self._advise(self.layout.base, self.layout.base + self.layout.size, _MADV_DONTNEED)

    @staticmethod
    def _advise(start: int, end: int, advice: int) -> None:
        first = -(-start // PAGE) * PAGE
        last = end // PAGE * PAGE
        if last > first and _libc.madvise(first, last - first, advice) != 0:
            raise OSError(ctypes.get_errno(), f"madvise({advice}) failed on the KV cells")


def locate(before: list[Range], after: list[Range], shape: Layout, stream: int, saved: bytes) -> Layout | None:
    """The layout of `shape` (base unknown) at the address where the probe token written into
    `stream` (its saved state: `saved`) is found; None when it is nowhere."""
    for base in candidates(new_ranges(before, after), shape.size):
        layout = Layout(base, shape.row, shape.cells, shape.n_streams, shape.n_tensors)
        if matches(layout, stream, saved):
            return layout
    return None
