"""`api/text_repair.py`: what UTF-8 cannot carry becomes what a browser would make of it."""

from __future__ import annotations

from streamchat.api.text_repair import repaired, usv


def test_pairs_join_and_lone_surrogates_become_u_fffd() -> None:
    assert usv("\ud83c\udf0a") == "🌊"
    assert usv("a\ud800b") == "a\ufffdb"
    assert usv("\udfff") == "\ufffd"
    assert usv("你好 😀") == "你好 😀"


def test_every_string_of_a_body_is_repaired_keys_included() -> None:
    body = {"messages": [{"role": "user", "content": "\ud83c hi"}], "stop": ["\udfff"], "k\ud800": 1, "n": 2.5}
    fixed = {"messages": [{"role": "user", "content": "\ufffd hi"}], "stop": ["\ufffd"], "k\ufffd": 1, "n": 2.5}
    assert repaired(body) == fixed


def test_any_depth_is_walked_without_recursion() -> None:
    """Regression: the walk recursed, and a body nested a few hundred levels deep gave a 500."""
    deep: list = ["\ud800"]
    for _ in range(100_000):
        deep = [deep]
    out = repaired(deep)
    for _ in range(100_000):
        out = out[0]
    assert out == ["\ufffd"]
