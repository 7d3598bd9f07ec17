"""`engine/detokenizer.py` with the embedded model's real tokenizer.

Chinese characters and emoji span several byte-level tokens: the deltas must never carry a broken
character, and together they must equal a decode of all generated ids.
"""

from __future__ import annotations

import pytest

from streamchat.engine.detokenizer import IncrementalDetokenizer

REPLACEMENT = "\ufffd"
TEXTS = [
    "你好，世界。今天天气很好。",
    "I 😀 love 👨‍👩‍👧 emoji 🇨🇳!",
    "naïve café, Ελληνικά, русский, 日本語のテキスト",
    "mixed 中文 and English 和 emoji 🎉🎉",
    "  leading spaces and\nnew\nlines\t",
]


def stream(tokenizer, prompt_ids: list[int], ids: list[int]) -> list[str]:
    detok = IncrementalDetokenizer(tokenizer, prompt_ids)
    return [detok.add(i) for i in ids] + [detok.finish()]


@pytest.mark.parametrize("text", TEXTS)
def test_deltas_reassemble_to_the_full_decode(tokenizer, text: str) -> None:
    ids = tokenizer.encode(text)
    deltas = stream(tokenizer, tokenizer.encode("Say:"), ids)
    assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=True) == text


@pytest.mark.parametrize("text", TEXTS)
def test_no_replacement_character_in_any_delta(tokenizer, text: str) -> None:
    deltas = stream(tokenizer, tokenizer.encode("Say:"), tokenizer.encode(text))
    assert not [d for d in deltas if REPLACEMENT in d]


def test_chinese_really_is_split_across_tokens(tokenizer) -> None:
    """Guards the tests above: the tokenizer must split these characters, or they prove nothing."""
    ids = tokenizer.encode("你好，世界。")
    assert len(ids) > len("你好，世界。")
    assert any(REPLACEMENT in tokenizer.decode([i]) for i in ids)


def test_each_character_arrives_as_soon_as_it_is_complete(tokenizer) -> None:
    ids = tokenizer.encode("你好")
    deltas = stream(tokenizer, [], ids)[:-1]
    assert [d for d in deltas if d] == ["你", "好"]
    assert deltas[-1] == "好"


def test_invalid_bytes_kept_when_the_full_decode_has_them(tokenizer) -> None:
    """A lone continuation byte never completes: it comes out at the end, as the full decode has it."""
    ids = tokenizer.encode("你好")
    lone = next(i for i in ids if tokenizer.decode([i]) == REPLACEMENT)
    generated = [*tokenizer.encode("ok "), lone, *tokenizer.encode(" end")]
    deltas = stream(tokenizer, [], generated)
    full = tokenizer.decode(generated, skip_special_tokens=True)
    assert REPLACEMENT in full
    assert "".join(deltas) == full


def test_special_tokens_are_skipped(tokenizer) -> None:
    ids = [*tokenizer.encode("hi"), tokenizer.eos_token_id, *tokenizer.encode(" there")]
    assert "".join(stream(tokenizer, [], ids)) == tokenizer.decode(ids, skip_special_tokens=True)


def test_prompt_ending_inside_a_character(tokenizer) -> None:
    """A token-id prompt may end half way through a character; the answer's bytes start mid-character.

    The concatenated deltas must still equal `decode(generated)`, not repeat part of it.
    """
    ids = tokenizer.encode("你好世界")
    cut = next(k for k in range(1, len(ids)) if tokenizer.decode(ids[:k]).endswith(REPLACEMENT))
    generated = ids[cut:]
    deltas = stream(tokenizer, ids[:cut], generated)
    assert "".join(deltas) == tokenizer.decode(generated, skip_special_tokens=True)


class SentencePieceLike:
    """Decodes byte pieces like SentencePiece: the text of a whole decode loses one leading space."""

    PIECES = {1: b"Say:", 2: b" Hi", 3: b" there", 4: b" ok\xe4\xbd"}

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        text = b"".join(self.PIECES[i] for i in ids).decode("utf-8", errors="replace")
        return text.removeprefix(" ")


def test_the_final_tail_continues_where_the_sent_text_stopped() -> None:
    """Regression: `finish()` sliced a decode of the answer alone at the length already sent; when
    that decode differs from the windowed one (here: a leading space), the tail lost a character
    (" Hi thereok" instead of " Hi there ok")."""
    detok = IncrementalDetokenizer(SentencePieceLike(), [1])
    sent = [detok.add(i) for i in (2, 3, 4)]
    assert sent == [" Hi", " there", ""]  # the last piece ends inside a character: held back
    tail = detok.finish()
    assert "".join(sent) + tail.rstrip(REPLACEMENT) == " Hi there ok"
    assert detok.finish() == ""  # nothing is released twice


def test_a_character_cut_by_the_length_limit_is_not_replaced_by_u_fffd(tokenizer) -> None:
    """An answer that ends inside a character ends with the last complete one, not with U+FFFD."""
    ids = tokenizer.encode("你好")
    cut = next(k for k in range(1, len(ids)) if tokenizer.decode(ids[:k]).endswith(REPLACEMENT))
    deltas = stream(tokenizer, tokenizer.encode("Say:"), ids[:cut])
    assert "".join(deltas) == tokenizer.decode(ids[:cut]).rstrip(REPLACEMENT)
    assert REPLACEMENT not in "".join(deltas)
