"""`engine/seen_tokens.py`: the distinct ids a repetition penalty reads, kept across steps."""

from __future__ import annotations

from streamchat.engine.seen_tokens import SeenTokens


def test_prompt_and_answer_ids_each_appear_once() -> None:
    seen = SeenTokens([5, 3, 5, 9])
    assert sorted(seen.ids([]).tolist()) == [3, 5, 9]
    assert sorted(seen.ids([9, 1, 1]).tolist()) == [1, 3, 5, 9]


def test_only_new_output_ids_are_taken_in_and_growth_keeps_them_all() -> None:
    seen, output = SeenTokens([0]), []
    for tok in range(1, 500):  # past the first buffer's size several times
        output.append(tok)
        assert len(seen.ids(output)) == tok + 1
    assert sorted(seen.ids(output).tolist()) == list(range(500))


def test_an_answer_that_shrank_is_taken_in_again_from_its_start() -> None:
    seen = SeenTokens([1, 2])
    seen.ids([7, 8, 9])
    assert sorted(seen.ids([8]).tolist()) == [1, 2, 8]
