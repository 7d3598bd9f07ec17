"""`api/text_repair.py`: what UTF-8 cannot carry becomes what a browser would make of it."""

from __future__ import annotations

import pytest

from streamchat.api.text_repair import MAX_DEPTH, repaired, usv


def test_pairs_join_and_lone_surrogates_become_u_fffd() -> None:
    assert usv("\ud83c\udf0a") == "🌊"
    assert usv("a\ud800b") == "a\ufffdb"
    assert usv("\udfff") == "\ufffd"
    assert usv("你好 😀") == "你好 😀"


def test_every_string_of_a_body_is_repaired_keys_included() -> None:
    body = {"messages": [{"role": "user", "content": "\ud83c hi"}], "stop": ["\udfff"], "k\ud800": 1, "n": 2.5}
    fixed = {"messages": [{"role": "user", "content": "\ufffd hi"}], "stop": ["\ufffd"], "k\ufffd": 1, "n": 2.5}
    assert repaired(body) == fixed


def test_nesting_past_the_limit_is_refused_not_recursed_into() -> None:
    deep: list = []
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(ValueError, match="deeper"):
        repaired(deep)
