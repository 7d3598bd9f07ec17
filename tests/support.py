"""Plain helpers shared by the tests: an SSE parser that follows the WHATWG rules, error checks."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import httpx

PING_INTERVAL_S = 1  # the test server pings this often
RESUME_GRACE_S = 2  # and reaps a dropped resumable stream after this long
LONG_ANSWER = 1500  # tokens: more than any test waits for, within the default 2048-token context

CJK = re.compile(r"[\u4e00-\u9fff]")
CHINESE_SENTENCE = "你好，世界。今天天气很好。"
# A completion prompt that SmolLM2-135M continues by echoing the Chinese sentence.
CHINESE_PROMPT = f"Repeat exactly: {CHINESE_SENTENCE}\nRepeat exactly: {CHINESE_SENTENCE}\nRepeat exactly:"


@dataclass
class SSEEvent:
    data: str
    event: str = "message"
    id: str = ""
    retry: int | None = None


@dataclass
class SSEParse:
    events: list[SSEEvent]
    comments: list[str]


def parse_sse(body: str) -> SSEParse:
    """Dispatch events as the WHATWG "Server-sent events" parsing rules say, comments kept apart."""
    events: list[SSEEvent] = []
    comments: list[str] = []
    data: list[str] = []
    event_type, last_id, retry = "", "", None
    for line in re.split(r"\r\n|\r|\n", body.removeprefix("\ufeff")):
        if line == "":
            if data:
                events.append(SSEEvent("\n".join(data), event_type or "message", last_id, retry))
            data, event_type, retry = [], "", None
            continue
        if line.startswith(":"):
            comments.append(line[1:].removeprefix(" "))
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event_type = value
        elif name == "id" and "\0" not in value:
            last_id = value
        elif name == "retry" and value.isdigit():
            retry = int(value)
    return SSEParse(events, comments)


def assert_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    """The OpenAI error shape with the expected status; returns the inner error object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    if param is not None:
        assert error["param"] == param, error
    return error


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def data_lines(lines: Iterable[str]) -> Iterable[str]:
    """The payloads of `data:` lines, in order."""
    for line in lines:
        if line.startswith("data:"):
            yield line[5:].removeprefix(" ")


def compact(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False)
