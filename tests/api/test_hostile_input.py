"""Hostile bytes from real clients: never a 500, always our error shape, the connection still usable.

Each test talks to the real server over loopback, on raw sockets where an HTTP client would refuse
to send such a request.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support import assert_error

CHAT = "/v1/chat/completions"


def raw_exchange(base_url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as is; return the status, headers and body of the answer.

    The server may answer and close before the whole request is sent (a refused body): the
    request is sent from another thread, and the answer read as it comes.
    """
    url = urlsplit(base_url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:

        def send() -> None:
            with contextlib.suppress(OSError):
                sock.sendall(request)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                data += chunk
        sender.join(30)
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def assert_shaped(status: int, headers: dict[str, str], body: bytes, expected: int) -> dict:
    assert status == expected, body
    assert headers["content-type"].startswith("application/json")
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (CHAT, '{"max_tokens":3,"temperature":0,"messages":[{"role":"user","content":"a\\ud800b"}]}'),
        (CHAT, '{"max_tokens":3,"messages":[{"role":"user","content":"\\ud83c hi"}],"stop":["\\udfff"]}'),
        ("/v1/completions", '{"max_tokens":3,"temperature":0,"prompt":"a\\ud800b"}'),
        ("/stream", '{"max_length":60,"temperature":0,"prompt":"a\\udc00b"}'),
        ("/", '{"max_length":80,"temperature":0,"prompt":"hi","history":[["\\ud800","x"]]}'),
    ],
)
def test_lone_surrogates_are_repaired_and_the_connection_goes_on(base_url: str, path: str, body: str) -> None:
    """Regression: a lone surrogate (what `JSON.stringify` sends for half an emoji) gave 500 and reset
    the kept-alive connection. It is read as U+FFFD, as a browser reads it."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        first = client.post(path, content=body.encode(), headers={"content-type": "application/json"})
        assert first.status_code == 200, first.text
        after = client.post(CHAT, json={"max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})
        assert after.status_code == 200


def test_a_surrogate_in_the_model_name_is_named_back_cleanly(http: httpx.Client) -> None:
    body = '{"model":"\\ud800","messages":[{"role":"user","content":"x"}]}'
    resp = http.post(CHAT, content=body.encode(), headers={"content-type": "application/json"})
    assert "\ufffd" in assert_error(resp, 404, "model")["message"]


def test_a_chunked_body_over_the_limit_is_413_like_a_declared_one(base_url: str) -> None:
    """Regression: without Content-Length the body was refused with FastAPI's 400 'error parsing the body'."""
    body = json.dumps({"messages": [{"role": "user", "content": "a" * (2 * 2**20)}]}).encode()
    pieces = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    answer = raw_exchange(base_url, head + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked)
    assert_shaped(*answer, 413)


def test_an_over_long_url_is_414_in_our_shape(base_url: str) -> None:
    """Regression: uvicorn answered a 200,000-character prompt in the URL with a plain-text 400."""
    request = b"GET /stream?prompt=" + b"x" * 200_000 + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    assert_shaped(*raw_exchange(base_url, request), 414)


def test_over_large_headers_are_431_and_garbage_is_a_shaped_400(base_url: str) -> None:
    big = b"GET /v1/models HTTP/1.1\r\nHost: t\r\nX-Big: " + b"y" * 100_000 + b"\r\nConnection: close\r\n\r\n"
    assert_shaped(*raw_exchange(base_url, big), 431)
    assert_shaped(*raw_exchange(base_url, b"NOT HTTP AT ALL\r\n\r\n"), 400)


def test_a_body_without_a_json_content_type_is_read_as_json(base_url: str) -> None:
    """Regression: `curl -d '{...}'` (form-urlencoded) got a 400 quoting Python bytes."""
    body = b'{"max_tokens":2,"messages":[{"role":"user","content":"hi"}]}'
    for content_type in (b"Content-Type: application/x-www-form-urlencoded\r\n", b""):
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\n" + content_type
        head += b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        status, _, answer = raw_exchange(base_url, head + body)
        assert status == 200 and json.loads(answer)["object"] == "chat.completion"
    not_json = b"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    error = assert_shaped(*raw_exchange(base_url, not_json), 400)
    assert error["message"].startswith("request body is not valid JSON") and "b'" not in error["message"]


@pytest.mark.parametrize("depth", [100, 900, 5000])
def test_deep_nesting_is_a_400(http: httpx.Client, depth: int) -> None:
    """Regression: a body nested a few hundred levels deep exhausted the recursion limit (500)."""
    body = b'{"messages":' + b"[" * depth + b"]" * depth + b"}"
    assert_error(http.post(CHAT, content=body, headers={"content-type": "application/json"}), 400)
