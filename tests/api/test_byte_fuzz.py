"""Byte-level fuzzing of the real server: hostile raw bodies and query strings on every route.

Hypothesis builds raw request bodies and query strings (invalid UTF-8, escaped and raw lone
surrogates, NUL and control characters, truncated JSON, oversized numbers, deep nesting) that no
schema-driven client would send. Each goes to a real server over loopback on a kept-alive
connection, parsed with h11 as a client sees it; none may get a 5xx, every error must be OpenAI's
shape, and a normal request on the same connection must succeed right after (a server that resets
the connection after a bad request fails here).

The server answers at most two tokens (`--max-tokens-limit 2`), so an input that happens to be a
valid request costs little.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from urllib.parse import quote_from_bytes, urlsplit

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import running_server

CASES = 2000
POST_ROUTES = ["/v1/chat/completions", "/v1/completions", "/stream", "/"]
GET_ROUTES = ["/stream", "/v1/streams/0123456789abcdef0123456789abcdef", "/v1/models", "/health"]
VALID_CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "stream": False}
VALID_SEED = {"prompt": "hi", "history": [["a", "b"]], "max_length": 40}

_json_text = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_hostile_strings = st.sampled_from(
    ['"\\ud800"', '"\\udfff x"', '"a\\u0000b"', '"\\ud83c\\udf0a"', '"\\x"', '"\\u12"', '"\x01\x02\x7f"']
)
_huge_numbers = st.sampled_from(["1e999999", "-1e400", "9" * 400, "0." + "0" * 500 + "1", "-0", "1E+309"])


@st.composite
def hostile_bodies(draw: st.DrawFn) -> bytes:
    """A raw body: broken JSON, JSON with hostile values in real fields, or arbitrary bytes."""
    kind = draw(st.integers(0, 6))
    base = draw(st.sampled_from([VALID_CHAT, VALID_SEED, {"prompt": "x", "max_tokens": 1}]))
    text = json.dumps(base)
    if kind == 0:  # truncated
        return text.encode()[: draw(st.integers(0, len(text) - 1))]
    if kind == 1:  # a hostile string or number in place of one value
        field = draw(st.sampled_from(list(base)))
        value = draw(_hostile_strings | _huge_numbers)
        return text.replace(json.dumps(base[field]), value, 1).encode()
    if kind == 2:  # invalid UTF-8 bytes inside a string
        raw = draw(st.binary(min_size=1, max_size=8).filter(lambda b: not _is_utf8(b)))
        return text.encode().replace(b"hi", raw, 1) if b"hi" in text.encode() else raw
    if kind == 3:  # deep nesting
        depth = draw(st.integers(50, 5000))
        return b'{"messages":' + b"[" * depth + b"]" * depth + b"}"
    if kind == 4:  # arbitrary JSON where an object is expected
        return json.dumps(draw(_json_text)).encode()
    if kind == 5:  # raw lone surrogate in the bytes (CESU-style) and NUL
        return text.encode().replace(b"hi", b"\xed\xa0\x80\x00", 1)
    return draw(st.binary(max_size=64))


@st.composite
def hostile_queries(draw: st.DrawFn) -> bytes:
    """A raw query string for the GET routes: percent-encoded hostile bytes in real parameters."""
    raw = draw(st.binary(max_size=24) | st.sampled_from([b"\xed\xa0\x80", b"\x00", b"\xff\xfe", "你好".encode()]))
    name = draw(st.sampled_from(["prompt", "history", "max_length", "temperature", "last_event_id", "api_key"]))
    extra = draw(st.sampled_from([b"", b"&max_length=1e999", b"&history=[[", b"&resumable=maybe", b"&prompt="]))
    return f"{name}={quote_from_bytes(raw)}".encode() + extra


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class KeptAliveConnection:
    """One TCP connection to the server, spoken HTTP/1.1 through h11 as a client."""

    def __init__(self, base_url: str) -> None:
        url = urlsplit(base_url)
        self.sock = socket.create_connection((url.hostname, url.port), timeout=30)
        self.conn = h11.Connection(h11.CLIENT)

    def exchange(self, method: str, target: bytes, body: bytes = b"") -> tuple[int, dict[bytes, bytes], bytes]:
        headers = [("Host", "fuzz"), ("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        self.sock.sendall(self.conn.send(h11.Request(method=method, target=target, headers=headers)))
        self.sock.sendall(self.conn.send(h11.Data(data=body)) + self.conn.send(h11.EndOfMessage()))
        status, answer_headers, data = 0, {}, b""
        while True:
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                chunk = self.sock.recv(65536)
                assert chunk, "the server closed the connection mid-answer"
                self.conn.receive_data(chunk)
            elif isinstance(event, h11.Response):
                status, answer_headers = event.status_code, dict(event.headers)
            elif isinstance(event, h11.Data):
                data += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
        assert self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE
        self.conn.start_next_cycle()  # raises if the server meant to close: the connection must go on
        return status, answer_headers, data

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def fuzz_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    flags = ["--max-tokens-limit", "2", "--default-max-tokens", "2", "--resume-grace", "0", "--log-level", "warning"]
    with running_server(tmp_path_factory.mktemp("fuzz"), *flags) as server:
        yield server.url


@pytest.fixture(scope="module")
def connection(fuzz_url: str) -> Iterator[KeptAliveConnection]:
    conn = KeptAliveConnection(fuzz_url)
    yield conn
    conn.close()


def check_answer(status: int, headers: dict[bytes, bytes], body: bytes) -> None:
    assert status < 500, body[:300]
    if status >= 400:
        assert headers[b"content-type"].startswith(b"application/json"), body[:300]
        error = json.loads(body)["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]


def check_connection_still_serves(connection: KeptAliveConnection) -> None:
    status, _, body = connection.exchange("GET", b"/v1/models")
    assert status == 200 and json.loads(body)["object"] == "list"


@settings(max_examples=CASES // 2, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(route=st.sampled_from(POST_ROUTES), body=hostile_bodies())
def test_hostile_bodies_on_every_post_route(connection: KeptAliveConnection, route: str, body: bytes) -> None:
    check_answer(*connection.exchange("POST", route.encode(), body))
    check_connection_still_serves(connection)


@settings(max_examples=CASES // 2, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(route=st.sampled_from(GET_ROUTES), query=hostile_queries())
def test_hostile_query_strings_on_every_get_route(connection: KeptAliveConnection, route: str, query: bytes) -> None:
    check_answer(*connection.exchange("GET", route.encode() + b"?" + query))
    check_connection_still_serves(connection)
