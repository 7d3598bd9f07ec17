"""`chat/prompt.py`: the chat template, and the history window by token budget."""

from __future__ import annotations

import re

import pytest

from streamchat.chat.prompt import PromptTooLongError, fit_history, render, rounds_to_messages

HISTORY = [[f"Question number {i}: tell me about topic {i}.", f"Answer {i}: " + "words " * 20] for i in range(8)]


def length(tokenizer, history, prompt: str = "And now?") -> int:
    return len(render(tokenizer, rounds_to_messages(history, prompt)))


def test_render_uses_the_chat_template(tokenizer) -> None:
    ids = render(tokenizer, [{"role": "user", "content": "Hello there"}])
    text = tokenizer.decode(ids)
    assert "Hello there" in text
    assert text.rstrip().endswith("assistant")  # the assistant's turn header closes the prompt


def test_rounds_to_messages_order_and_system() -> None:
    msgs = rounds_to_messages([["q1", "a1"], ["q2", "a2"]], "q3", system="be brief")
    roles = [m["role"] for m in msgs]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert [m["content"] for m in msgs] == ["be brief", "q1", "a1", "q2", "a2", "q3"]


def test_everything_kept_when_it_fits(tokenizer) -> None:
    fitted = fit_history(tokenizer, HISTORY, "And now?", context=8192, reserved=512)
    assert fitted.rounds_kept == len(HISTORY)
    assert fitted.token_ids == render(tokenizer, rounds_to_messages(HISTORY, "And now?"))


@pytest.mark.parametrize("keep", [0, 1, 3, 7])
def test_keeps_the_newest_rounds_that_fit(tokenizer, keep: int) -> None:
    limit = length(tokenizer, HISTORY[len(HISTORY) - keep :])  # exactly room for `keep` rounds
    fitted = fit_history(tokenizer, HISTORY, "And now?", context=limit + 100, reserved=100)
    assert fitted.rounds_kept == keep
    assert fitted.token_ids == render(tokenizer, rounds_to_messages(HISTORY[len(HISTORY) - keep :], "And now?"))
    assert len(fitted.token_ids) <= limit


def test_one_token_short_drops_one_more_round(tokenizer) -> None:
    limit = length(tokenizer, HISTORY[-3:]) - 1
    fitted = fit_history(tokenizer, HISTORY, "And now?", context=limit + 10, reserved=10)
    assert fitted.rounds_kept == 2


@pytest.mark.parametrize(("cap", "kept"), [(0, 0), (2, 2), (100, len(HISTORY))])
def test_history_rounds_cap(tokenizer, cap: int, kept: int) -> None:
    fitted = fit_history(tokenizer, HISTORY, "And now?", context=8192, reserved=512, max_rounds=cap)
    assert fitted.rounds_kept == kept
    assert fitted.token_ids == render(tokenizer, rounds_to_messages(HISTORY[len(HISTORY) - kept :], "And now?"))


def test_cap_and_budget_together_keep_the_smaller(tokenizer) -> None:
    limit = length(tokenizer, HISTORY[-2:])
    fitted = fit_history(tokenizer, HISTORY, "And now?", context=limit, reserved=0, max_rounds=5)
    assert fitted.rounds_kept == 2


def test_too_long_prompt_raises_with_counts(tokenizer) -> None:
    prompt = "word " * 300
    need = length(tokenizer, [], prompt)
    with pytest.raises(PromptTooLongError) as info:
        fit_history(tokenizer, HISTORY, prompt, context=256, reserved=56)
    err = info.value
    assert (err.prompt_tokens, err.limit) == (need, 200)
    numbers = {int(n) for n in re.findall(r"\d+", str(err))}
    assert {need, 200, 256, 56} <= numbers


def test_prompt_exactly_at_the_limit_fits(tokenizer) -> None:
    need = length(tokenizer, [], "hello")
    fitted = fit_history(tokenizer, HISTORY, "hello", context=need + 5, reserved=5)
    assert (fitted.rounds_kept, len(fitted.token_ids)) == (0, need)
