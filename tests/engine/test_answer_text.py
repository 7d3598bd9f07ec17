"""`engine/answer_text.py` with the embedded model's real tokenizer: text and logprobs travel together."""

from __future__ import annotations

from streamchat.engine.answer_text import AnswerText
from streamchat.engine.token_bytes import TokenBytes
from streamchat.engine.types import TokenLogprob


def logprob_of(token_bytes: TokenBytes, token_id: int) -> tuple[TokenLogprob, ...]:
    return (TokenLogprob(token_bytes.name(token_id), -1.0, list(token_bytes(token_id))),)


def play(tokenizer, text: str, cut: int | None = None, stops: tuple[str, ...] = ()) -> tuple[list[str], list[list]]:
    """Feed `text`'s tokens (the first `cut` only) and finish; return each delta's text and logprobs."""
    token_bytes = TokenBytes(tokenizer)
    answer = AnswerText(tokenizer, tokenizer.encode("Say:"), stops)
    texts, logprobs = [], []
    for token_id in tokenizer.encode(text)[:cut]:
        t, lps = answer.add(token_id, logprob_of(token_bytes, token_id))
        texts.append(t)
        logprobs.append(list(lps))
        if answer.stopped:
            return texts, logprobs
    t, lps = answer.finish()
    return [*texts, t], [*logprobs, list(lps)]


def test_each_deltas_logprobs_carry_exactly_its_texts_bytes(tokenizer) -> None:
    texts, logprobs = play(tokenizer, "日本語で挨拶 and 😀!")
    for t, lps in zip(texts, logprobs, strict=True):
        assert b"".join(bytes(lp.bytes) for lp in lps) == t.encode()
    assert "".join(texts) == "日本語で挨拶 and 😀!"


def test_a_cut_inside_a_character_leaves_its_bytes_out_of_text_and_logprobs(tokenizer) -> None:
    ids = tokenizer.encode("日本語")
    cut = next(k for k in range(1, len(ids)) if tokenizer.decode(ids[:k]).endswith("\ufffd"))
    texts, logprobs = play(tokenizer, "日本語", cut=cut)
    joined = "".join(texts)
    assert "\ufffd" not in joined and "日本語".startswith(joined)
    assert b"".join(bytes(lp.bytes) for lps in logprobs for lp in lps) == joined.encode()


def test_a_stop_string_ends_the_text_and_its_tokens_keep_their_logprobs(tokenizer) -> None:
    texts, logprobs = play(tokenizer, "one two three four", stops=(" three",))
    assert "".join(texts) == "one two"
    assert b"".join(bytes(lp.bytes) for lps in logprobs for lp in lps) == b"one two three"
