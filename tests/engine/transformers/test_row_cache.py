"""The row cache grows by doubling (each growth copies it all), within its row and token limits."""

from __future__ import annotations

import torch

from streamchat.engine.transformers.row_cache import _LEN_STEP, RowKVCache


def _cache() -> RowKVCache:
    return RowKVCache(num_layers=2, kv_heads=1, head_dim=4, dtype=torch.float32, device=torch.device("cpu"))


def test_rows_double_and_keep_what_is_stored() -> None:
    cache = _cache()
    cache.limit(max_rows=64, max_tokens=64 * _LEN_STEP)
    cache.reserve(1, 10)
    assert (cache.rows, cache.capacity) == (8, _LEN_STEP)
    cache.keys[0][3, 0, 5] = 7.0
    grown = []
    for rows in range(9, 65):
        before = cache.rows
        cache.reserve(rows, 10)
        if cache.rows != before:
            grown.append(cache.rows)
    assert grown == [16, 32, 64], "three copies to reach 64 rows, not seven"
    assert cache.keys[0][3, 0, 5, 0] == 7.0


def test_growth_stays_within_max_rows_and_the_token_budget() -> None:
    cache = _cache()
    cache.limit(max_rows=20, max_tokens=10_000)
    cache.reserve(9, 10)
    assert cache.rows == 16
    cache.reserve(17, 10)
    assert cache.rows == 24, "max_rows 20, rounded up to the row step"
    tight = _cache()
    tight.limit(max_rows=64, max_tokens=16 * _LEN_STEP)
    tight.reserve(9, 10)
    tight.reserve(17, 10)
    assert tight.rows == 24, "the budget (16 full rows) leaves no room to double; only what is needed"
