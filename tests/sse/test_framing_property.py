"""`sse/framing.py` round-trips any text through a strict WHATWG event-stream parser.

The parser here follows the HTML standard's "Server-sent events" processing model step by step and
is fed the bytes in arbitrary pieces, as a network delivers them: UTF-8 decoded incrementally, a
CR at the end of one piece and an LF at the start of the next are one line break, an unfinished
event at the end is dropped. The suite's own `parse_sse` must agree with it.

What "round-trips" means, where the wire cannot carry the text as it is:
- line breaks in data (`\\r\\n`, `\\r`, `\\n`) come back as `\\n` (the parser joins data lines with `\\n`);
- line breaks in event names and ids are dropped, and NUL in ids (a NUL makes a parser ignore the id);
- a lone surrogate, which UTF-8 cannot encode, comes back as U+FFFD, and a surrogate pair as the
  character it stands for, as a browser's USVString conversion does. Nothing crashes.
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from streamchat.sse import framing
from tests.support import parse_sse

TRICKY = ["\r", "\n", "\r\n", "\n\r", "\0", "\ud800", "\udfff", "\ud83d", "\ude00", "😀", "中", "\ufeff", ":", " ", "é"]
# Every code point, surrogates included (hypothesis leaves them out of text() by default).
ANY_CHAR = st.characters(codec=None, categories=None)
TEXT = st.lists(st.one_of(ANY_CHAR, st.sampled_from(TRICKY)), max_size=40).map("".join)


@dataclass(frozen=True)
class Event:
    data: str
    type: str
    last_event_id: str


class StrictParser:
    """The WHATWG event-stream interpretation, fed bytes in any pieces."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._text = ""
        self._started = False
        self._data, self._type, self._id_buffer, self._last_id = "", "", "", ""
        self.events: list[Event] = []
        self.comments: list[str] = []
        self.retry: int | None = None

    def feed(self, chunk: bytes, final: bool = False) -> None:
        self._text += self._decoder.decode(chunk, final)
        if not self._started and self._text:
            self._text = self._text.removeprefix("\ufeff")  # one BOM, at the very start only
            self._started = True
        while True:
            m = re.search(r"\r\n|\r|\n", self._text)
            if m is None or (m.group() == "\r" and m.end() == len(self._text) and not final):
                break  # no line end yet, or a CR that may be the first half of a CRLF
            line, self._text = self._text[: m.start()], self._text[m.end() :]
            self._line(line)
        # at the end of the stream an unfinished line and an undispatched event are discarded

    def _line(self, line: str) -> None:
        if line == "":
            self._dispatch()
        elif line.startswith(":"):
            self.comments.append(line[1:].removeprefix(" "))
        else:
            name, colon, value = line.partition(":")
            self._field(name, value.removeprefix(" ") if colon else "")

    def _field(self, name: str, value: str) -> None:
        if name == "data":
            self._data += value + "\n"
        elif name == "event":
            self._type = value
        elif name == "id" and "\0" not in value:
            self._id_buffer = value
        elif name == "retry" and value and all(c in "0123456789" for c in value):
            self.retry = int(value)

    def _dispatch(self) -> None:
        self._last_id = self._id_buffer
        if self._data == "":
            self._type = ""
            return
        self.events.append(Event(self._data.removesuffix("\n"), self._type or "message", self._last_id))
        self._data, self._type = "", ""


def parse_in_pieces(body: bytes, cuts: list[int]) -> StrictParser:
    parser = StrictParser()
    edges = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    for a, b in zip(edges, edges[1:], strict=False):
        parser.feed(body[a:b])
    parser.feed(b"", final=True)
    return parser


def usv(text: str) -> str:
    """What a UTF-8 stream can carry of `text`: pairs joined, lone surrogates replaced by U+FFFD."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def as_data(text: str) -> str:
    return usv(re.sub(r"\r\n|\r", "\n", text))


def as_field(text: str, strip_nul: bool) -> str:
    cleaned = re.sub(r"\r\n|\r|\n", "", text)
    return usv(cleaned.replace("\0", "") if strip_nul else cleaned)


@settings(max_examples=400, deadline=None)
@given(data=TEXT, cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_any_data_round_trips(data: str, cuts: list[int]) -> None:
    body = framing.encode_event(data)
    body.decode("utf-8")  # always valid UTF-8
    parsed = parse_in_pieces(body, cuts)
    assert parsed.events == [Event(as_data(data), "message", "")]
    assert [(e.data, e.event) for e in parse_sse(body.decode()).events] == [(as_data(data), "message")]


@settings(max_examples=300, deadline=None)
@given(data=TEXT, name=TEXT, event_id=TEXT, cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_event_names_and_ids_round_trip(data: str, name: str, event_id: str, cuts: list[int]) -> None:
    parsed = parse_in_pieces(framing.encode_event(data, event=name, id=event_id), cuts)
    expected_type = as_field(name, strip_nul=True) or "message"
    assert parsed.events == [Event(as_data(data), expected_type, as_field(event_id, strip_nul=True))]


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(
        st.one_of(
            st.tuples(st.just("event"), TEXT, st.one_of(st.none(), TEXT), st.one_of(st.none(), TEXT)),
            st.tuples(st.just("comment"), TEXT),
        ),
        max_size=8,
    ),
    cuts=st.lists(st.integers(min_value=0), max_size=16),
)
def test_a_stream_of_events_and_keep_alive_comments_round_trips(items: list[tuple], cuts: list[int]) -> None:
    """Comments are sent without a blank line after them, so they must never end or split an event."""
    body, expected, comments, last_id = b"", [], [], ""
    for item in items:
        if item[0] == "comment":
            body += framing.comment(item[1])
            comments += [usv(line) for line in re.split(r"\r\n|\r|\n", item[1])]
            continue
        _, data, name, event_id = item
        body += framing.encode_event(data, event=name, id=event_id)
        last_id = as_field(event_id, strip_nul=True) if event_id is not None else last_id
        expected.append(Event(as_data(data), (as_field(name, True) if name is not None else "") or "message", last_id))
    parsed = parse_in_pieces(body, cuts)
    assert parsed.events == expected
    assert parsed.comments == comments
    loose = parse_sse(body.decode())
    assert [(e.data, e.event, e.id) for e in loose.events] == [(e.data, e.type, e.last_event_id) for e in expected]


@settings(max_examples=200, deadline=None)
@given(obj=st.recursive(
    st.none() | st.booleans() | st.integers() | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
))  # fmt: skip
def test_json_payloads_stay_on_one_data_line_and_decode_back(obj: object) -> None:
    body = framing.encode_event(framing.to_json(obj))
    assert body.count(b"\ndata:") == 0 and body.startswith(b"data: ")  # JSON escapes every line break
    (event,) = parse_in_pieces(body, []).events
    assert json.loads(event.data) == json.loads(usv(json.dumps(obj, ensure_ascii=False)))


@given(retry=st.integers(min_value=0, max_value=2**53))
def test_retry_round_trips(retry: int) -> None:
    parsed = parse_in_pieces(framing.encode_event("x", retry=retry), [])
    assert parsed.retry == retry and parsed.events == [Event("x", "message", "")]


def test_surrogates_are_replaced_not_fatal() -> None:
    assert framing.encode_event("a\ud800b") == "data: a\ufffdb\n\n".encode()
    assert framing.encode_event("\ud83d\ude00") == "data: 😀\n\n".encode()
    assert framing.comment("\udfff") == ": \ufffd\n".encode()
