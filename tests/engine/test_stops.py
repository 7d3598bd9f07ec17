"""`engine/stops.py`: a stop string never reaches the client, however the text is split."""

from __future__ import annotations

import pytest

from streamchat.engine.stops import StopMatcher


def run(stops: tuple[str, ...], pieces: list[str]) -> tuple[str, bool]:
    m = StopMatcher(stops)
    out = []
    for piece in pieces:
        out.append(m.feed(piece))
        if m.stopped:
            return "".join(out), True
    out.append(m.flush())
    return "".join(out), False


def test_no_stops_passes_text_through() -> None:
    m = StopMatcher(())
    assert m.feed("abc") == "abc"
    assert m.flush() == ""


def test_stop_inside_one_delta() -> None:
    assert run(("END",), ["abcENDxyz"]) == ("abc", True)


@pytest.mark.parametrize("split", [1, 2, 3, 4, 5, 6])
def test_stop_split_across_deltas(split: int) -> None:
    text = "Hi <|end|> tail"
    cut = text.index("<|end|>") + split
    assert run(("<|end|>",), [text[:cut], text[cut:]]) == ("Hi ", True)


def test_stop_split_one_char_per_delta() -> None:
    assert run(("<|end|>",), list("Hi <|end|> tail")) == ("Hi ", True)


def test_possible_prefix_is_held_back() -> None:
    m = StopMatcher(("STOP",))
    assert m.feed("go ST") == "go "
    assert m.feed("O") == ""
    assert m.feed("NE") == "STONE"
    assert not m.stopped


def test_partial_prefix_released_at_the_end() -> None:
    m = StopMatcher(("STOP",))
    assert m.feed("almost ST") == "almost "
    assert m.flush() == "ST"
    assert m.flush() == ""


def test_earliest_of_several_stops_wins() -> None:
    assert run(("world", "lo"), ["hello world"]) == ("hel", True)


def test_overlapping_prefixes_of_different_stops() -> None:
    assert run(("abc", "bd"), ["a", "b", "d"]) == ("a", True)
    assert run(("abc", "bd"), ["a", "b", "c"]) == ("", True)
    assert run(("abc", "bd"), ["a", "b", "x"]) == ("abx", False)


def test_multibyte_stop() -> None:
    assert run(("。",), ["你好", "。今天"]) == ("你好", True)


def test_empty_stop_strings_are_ignored() -> None:
    assert run(("",), ["abc"]) == ("abc", False)


def test_concatenation_never_contains_the_stop() -> None:
    text = "one two <stop> three"
    for cut in range(len(text) + 1):
        out, stopped = run(("<stop>",), [text[:cut], text[cut:]])
        assert (out, stopped) == ("one two ", True), cut
