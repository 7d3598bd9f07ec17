"""KV memory follows the tokens held: the cells' pages go back to the OS and come back as zeros."""

from __future__ import annotations

import ctypes
import random

import pytest

pytest.importorskip("llama_cpp", reason="the llamacpp engine needs llama-cpp-python")

from streamchat.config import default_cache_dir  # noqa: E402
from streamchat.engine.llamacpp.loader import LoadedGGUF, load_gguf  # noqa: E402
from streamchat.engine.llamacpp.pages import PAGE, KvPages, new_ranges  # noqa: E402
from streamchat.engine.llamacpp.runner import LlamaCppRunner  # noqa: E402

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)


def resident_bytes(pages: KvPages) -> int:
    """Memory the cells take now: the kernel's count of their mapped pages (a few that were only
    read, and so share the kernel's zero page, are counted too)."""
    start, end = pages.layout.base // PAGE * PAGE, pages.layout.base + pages.layout.size
    n_pages = -(-(end - start) // PAGE)
    vec = (ctypes.c_uint8 * n_pages)()
    assert _libc.mincore(start, n_pages * PAGE, vec) == 0
    return (n_pages - bytes(vec).count(0)) * PAGE


@pytest.fixture(scope="module")
def gguf() -> LoadedGGUF:
    return load_gguf(None, default_cache_dir(), None)


def runner(gguf: LoadedGGUF, rows: int = 4) -> LlamaCppRunner:
    return LlamaCppRunner(gguf.model, n_ctx_seq=1024, max_num_seqs=rows, max_batch_tokens=600, threads=1)


def test_new_ranges_are_what_appeared() -> None:
    assert new_ranges([(10, 20)], [(0, 30), (40, 50)]) == [(0, 10), (20, 30), (40, 50)]
    assert new_ranges([(0, 100)], [(10, 20)]) == []


def test_cells_are_resident_only_while_held(gguf: LoadedGGUF) -> None:
    r = runner(gguf)
    pages = r.cache.pages
    assert pages is not None, "the runner did not find llama.cpp's cells"
    per_token = gguf.model.kv_bytes_per_token
    # per tensor: a partly used page at each end, and pages past the end that attention only read
    # (mapped to the zero page: no memory, but mincore counts them)
    slop = 4 * pages.layout.n_tensors * PAGE
    assert resident_bytes(pages) <= 2 * PAGE  # nothing held: the partial pages at either end
    ids = [random.Random(0).randrange(1000, 20000) for _ in range(500)]
    r.forward(2, [ids], [0])
    assert 500 * per_token <= resident_bytes(pages) <= 500 * per_token + slop
    r.cache.truncate(2, 100)
    assert 100 * per_token <= resident_bytes(pages) <= 100 * per_token + slop
    r.cache.truncate(2, 90)  # a few cells fewer: they are about to be written again, kept
    assert resident_bytes(pages) >= 100 * per_token
    r.cache.release()
    # what stays: per tensor, the page the emptied stream shares with its neighbour
    assert resident_bytes(pages) <= (pages.layout.n_tensors + 2) * PAGE
    r.close()


def test_rows_keep_their_cells_when_neighbours_hand_theirs_back(gguf: LoadedGGUF) -> None:
    """Long rows truncated, moved and swapped (each handing pages back): every row's next logits
    equal a fresh run's, so no page of a cell still held was handed back. (Every chunk here feeds
    64 tokens or more, as the fresh run's does: the same attention kernel computed both.)"""
    rng = random.Random(3)
    r, fresh = runner(gguf), runner(gguf, rows=1)
    held: list[list[int]] = [[], [], [], []]

    def feed(row: int, n: int) -> None:
        chunk = [rng.randrange(1000, 20000) for _ in range(n)]
        r.forward(row, [chunk], [len(held[row])])
        held[row] += chunk

    for row in range(4):
        feed(row, 300 + 50 * row)
    r.cache.truncate(1, 120)
    held[1] = held[1][:120]
    feed(1, 200)
    r.cache.move_row(3, 0)
    held[0], held[3] = held[3], []
    r.cache.swap_rows(0, 2)
    held[0], held[2] = held[2], held[0]
    r.cache.truncate(2, 77)
    held[2] = held[2][:77]
    for row, ids in enumerate(held):
        if ids:
            probe = r.forward(row, [[42]], [len(ids)])
            fresh.cache.release()
            fresh.forward(0, [ids], [0])
            assert probe.equal(fresh.forward(0, [[42]], [len(ids)])), f"row {row} lost cells"
    r.close()
    fresh.close()
