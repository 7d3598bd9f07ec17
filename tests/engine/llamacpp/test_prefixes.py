"""The parked-prefix store's own arithmetic (its reuse in answers is checked in test_runner.py)."""

from __future__ import annotations

import random

import pytest

pytest.importorskip("llama_cpp", reason="the llamacpp engine needs llama-cpp-python")

from streamchat.engine.llamacpp.prefixes import _common_prefix  # noqa: E402


def slow_common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_the_common_prefix_is_found_wherever_the_lists_part() -> None:
    rng = random.Random(3)
    base = [rng.randrange(50) for _ in range(300)]
    cases = [([], []), ([], [1]), ([1], [2]), ([1, 2], [1, 2]), ([1, 2, 3], [1, 2]), (base, base[:17])]
    for cut in [0, 1, 2, 63, 64, 150, 299]:
        other = base.copy()
        other[cut] += 1
        cases += [(base, other), (base, other[: cut + 5]), (other[: cut + 1], base)]
    for a, b in cases:
        assert _common_prefix(a, b) == slow_common_prefix(a, b), (len(a), len(b))
