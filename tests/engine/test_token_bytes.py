"""`engine/token_bytes.py` with the embedded model's real tokenizer."""

from __future__ import annotations

from streamchat.engine.token_bytes import TokenBytes, display

TEXTS = ["日本語で挨拶してください", "I 😀 emoji 👨‍👩‍👧", " plain words, café"]


def test_tokens_bytes_join_into_the_texts_utf8(tokenizer) -> None:
    token_bytes = TokenBytes(tokenizer)
    for text in TEXTS:
        ids = tokenizer.encode(text)
        assert b"".join(token_bytes(i) for i in ids) == text.encode()


def test_a_token_holding_part_of_a_character_is_named_by_its_bytes(tokenizer) -> None:
    token_bytes = TokenBytes(tokenizer)
    ids = tokenizer.encode("日本語")
    partial = [i for i in ids if tokenizer.decode([i]).endswith("\ufffd")]
    assert partial, "the tokenizer must split these characters, or this proves nothing"
    for i in partial:
        name = token_bytes.name(i)
        assert name.startswith("bytes:\\x") and "\ufffd" not in name
        assert bytes.fromhex(name.removeprefix("bytes:").replace("\\x", "")) == token_bytes(i)


def test_special_tokens_add_no_bytes_and_keep_their_name(tokenizer) -> None:
    token_bytes = TokenBytes(tokenizer)
    assert token_bytes(tokenizer.eos_token_id) == b""
    assert token_bytes.name(tokenizer.eos_token_id) == tokenizer.eos_token


def test_display() -> None:
    assert display("日".encode()) == "日"
    assert display(b"\xe6\x97") == "bytes:\\xe6\\x97"
