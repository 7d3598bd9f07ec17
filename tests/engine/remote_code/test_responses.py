"""Growing whole responses become append-only deltas: no half characters, rewrites absorbed."""

from __future__ import annotations

from streamchat.engine.remote_code.responses import ResponseDeltas


def stream(responses: list[str]) -> tuple[list[str], ResponseDeltas]:
    deltas = ResponseDeltas()
    out = [deltas.update(r) for r in responses]
    out.append(deltas.finish())
    return out, deltas


def test_plain_growth_arrives_whole_and_in_order() -> None:
    out, deltas = stream(["你", "你好", "你好，", "你好，世界"])
    assert "".join(out) == "你好，世界"
    assert not deltas.rewritten


def test_a_character_still_in_pieces_is_never_sent_as_u_fffd() -> None:
    # a byte-level decode of a half-finished character ends in U+FFFD until its last byte arrives
    out, _ = stream(["第", "第\ufffd", "第\ufffd\ufffd", "第1", "第1\ufffd", "第1轮", "第1轮🌊"])
    assert all("\ufffd" not in piece for piece in out)
    assert "".join(out) == "第1轮🌊"


def test_punctuation_rewritten_when_the_next_character_arrives_is_sent_rewritten() -> None:
    # ChatGLM-6B's process_response turns "OK," into "OK，" once a Chinese character follows,
    # which may take several yields (the character's bytes arrive one token at a time)
    out, deltas = stream(["OK", "OK,", "OK,\ufffd", "OK,\ufffd", "OK，你", "OK，你好"])
    assert "".join(out) == "OK，你好"
    assert not deltas.rewritten


def test_a_response_that_shrinks_for_a_while_sends_nothing_twice() -> None:
    # trailing spaces are stripped by the model, then come back with the next word
    out, deltas = stream(["Hello", "Hello", "Hello w", "Hello", "Hello wo", "Hello world"])
    assert "".join(out) == "Hello world"
    assert not deltas.rewritten


def test_a_rewrite_of_text_already_sent_keeps_what_was_sent_and_goes_on_at_its_length() -> None:
    out, deltas = stream(["abcdef", "abcdefg", "abcdefgh", "abXdefghi", "abXdefghij"])
    assert deltas.rewritten
    assert "".join(out) == "abcdefghij"  # the client's copy: what it was sent, then the new text


def test_an_unfinished_character_at_the_end_is_left_out() -> None:
    out, _ = stream(["你好", "你好\ufffd"])
    assert "".join(out) == "你好"


def test_nothing_yielded_sends_nothing() -> None:
    out, deltas = stream([])
    assert out == [""] and deltas.sent == ""
