"""The UTF-8 guard: byte transitions by RFC 3629's table, and no pick that breaks a character."""

from __future__ import annotations

import pytest
import torch

from streamchat.engine.sampler import RowState, sample
from streamchat.engine.token_bytes import TokenBytes
from streamchat.engine.types import SamplingParams
from streamchat.engine.utf8_guard import START, Utf8Guard, advance


@pytest.mark.parametrize(
    "data",
    ["a", "é", "中文", "😀", "\u07ff", "\u0800", "\ud7ff", "\ue000", "\U00010000", "\U0010ffff"],
)
def test_every_valid_character_returns_to_the_start(data: str) -> None:
    assert advance(START, data.encode()) == START


@pytest.mark.parametrize(
    "data",
    [b"\x80", b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xed\xa0\x80", b"\xf0\x80\x80\x80", b"\xf4\x90\x80\x80",
     b"\xf5", b"\xff", b"\xe4\xb8a", b"\xe4\xb8\xe4"],
)  # fmt: skip
def test_bytes_no_valid_text_holds_are_refused(data: bytes) -> None:
    assert advance(START, data) is None


def test_a_character_split_anywhere_is_followed_byte_by_byte() -> None:
    whole = "中".encode()
    state = advance(START, whole[:1])
    assert state not in (None, START)
    assert advance(state, whole[1:]) == START
    assert advance(state, b"a") is None


def test_a_split_character_only_continues_with_tokens_that_complete_it(tokenizer) -> None:
    """With the embedded model's vocabulary: after the first byte of 中 the mask allows no token
    that starts a new character, and it allows the tokens that go on with it."""
    data = TokenBytes(tokenizer)
    guard = Utf8Guard(data, len(tokenizer))
    vocab = len(tokenizer)
    first_byte = next(t for t in range(vocab) if data(t) == "中".encode()[:1])
    state = guard.after(START, first_byte)
    allowed = guard.allowed(state, vocab)
    rest = "中".encode()[1:]
    completing = [t for t in range(vocab) if data(t) and rest.startswith(data(t))]
    assert completing and all(allowed[t] for t in completing)
    assert not allowed[tokenizer.encode("a", add_special_tokens=False)[0]]
    assert all(allowed[t] for t in tokenizer.all_special_ids)  # the answer may end anywhere


def test_a_pick_that_breaks_a_character_is_replaced_by_the_best_that_fits(tokenizer) -> None:
    """Regression: greedy answers under a repetition penalty held U+FFFD where the model's top
    token was a continuation byte with no character to continue."""
    data = TokenBytes(tokenizer)
    guard = Utf8Guard(data, len(tokenizer))
    vocab = len(tokenizer)
    lone = next(t for t in range(vocab) if data(t) == b"\x80")
    letter = tokenizer.encode("a", add_special_tokens=False)[0]
    logits = torch.zeros(2, vocab)
    logits[:, lone], logits[:, letter] = 10.0, 5.0
    greedy = RowState(SamplingParams(temperature=0.0), [], [], None)
    sampled = RowState(SamplingParams(temperature=1.0, top_k=2), [], [], torch.Generator().manual_seed(0))
    picks = sample(logits, [greedy, sampled], torch.Generator().manual_seed(0), guard=guard)
    assert [p.token_id for p in picks] == [letter, letter]
    unguarded = sample(logits[:1], [greedy], torch.Generator().manual_seed(0))
    assert unguarded[0].token_id == lone  # the guard is what changed the pick
