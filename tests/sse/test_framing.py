"""`sse/framing.py` byte for byte, and round-tripped through a WHATWG-conforming parser."""

from __future__ import annotations

import json

import pytest

from streamchat.sse import framing
from tests.support import parse_sse


def test_plain_event() -> None:
    assert framing.encode_event("hello") == b"data: hello\n\n"


def test_empty_data_is_one_empty_data_line() -> None:
    assert framing.encode_event("") == b"data: \n\n"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("a\nb", b"data: a\ndata: b\n\n"),
        ("a\r\nb", b"data: a\ndata: b\n\n"),
        ("a\rb", b"data: a\ndata: b\n\n"),
        ("a\n\nb", b"data: a\ndata: \ndata: b\n\n"),
        ("a\n", b"data: a\ndata: \n\n"),
        ("\r\n", b"data: \ndata: \n\n"),
    ],
)
def test_line_breaks_become_data_lines(data: str, expected: bytes) -> None:
    assert framing.encode_event(data) == expected


@pytest.mark.parametrize("data", ["x", "a\nb", "a\r\nb\rc", "\n", " leading space", "你好😀", "a\n\n\nb", ""])
def test_parser_gets_data_back_with_newlines_normalised(data: str) -> None:
    parsed = parse_sse(framing.encode_event(data).decode("utf-8"))
    assert [e.data for e in parsed.events] == [data.replace("\r\n", "\n").replace("\r", "\n")]


def test_id_event_and_retry_come_first_in_one_block() -> None:
    got = framing.encode_event("x", event="delta", id="7", retry=1500)
    assert got == b"id: 7\nevent: delta\nretry: 1500\ndata: x\n\n"
    (ev,) = parse_sse(got.decode()).events
    assert (ev.id, ev.event, ev.retry, ev.data) == ("7", "delta", 1500, "x")


def test_id_and_event_lose_line_breaks_and_nul() -> None:
    got = framing.encode_event("x", event="a\r\nb", id="1\n2\r3\x004")
    assert got == b"id: 1234\nevent: ab\ndata: x\n\n"


def test_utf8_on_the_wire() -> None:
    assert framing.encode_event("新能源 😀") == "data: 新能源 😀\n\n".encode()


def test_json_compact_by_default() -> None:
    assert framing.encode_event(framing.to_json({"a": 1, "b": "中"})) == 'data: {"a":1,"b":"中"}\n\n'.encode()


def test_json_seed_separators() -> None:
    obj = {"id": 0, "time": "2026-11-25 12:00:00", "text": "新"}
    got = framing.encode_event(framing.to_json(obj, compact=False))
    assert got == 'data: {"id": 0, "time": "2026-11-25 12:00:00", "text": "新"}\n\n'.encode()


def test_json_with_newline_in_text_stays_one_line() -> None:
    got = framing.encode_event(framing.to_json({"text": "a\nb\r"}), event="error", id="3")
    assert got == b'id: 3\nevent: error\ndata: {"text":"a\\nb\\r"}\n\n'
    (ev,) = parse_sse(got.decode()).events
    assert json.loads(ev.data) == {"text": "a\nb\r"}


def test_done() -> None:
    assert framing.encode_event(framing.DONE, id="9") == b"id: 9\ndata: [DONE]\n\n"


def test_comment_has_no_blank_line_after_it() -> None:
    assert framing.comment() == b": ping\n"
    assert framing.comment("a\nb") == b": a\n: b\n"


def test_comment_between_events_dispatches_nothing() -> None:
    body = (framing.encode_event("1") + framing.comment() + framing.encode_event("2") + framing.comment()).decode()
    parsed = parse_sse(body)
    assert [e.data for e in parsed.events] == ["1", "2"]
    assert parsed.comments == ["ping", "ping"]
