"""Every bad input gets its 4xx in OpenAI's error shape, on every route: never a 500, never a hang.

In process (`tests/api/inprocess.py`): the answer to bad input is decided before the model runs, so
the fake runner stands in for it; the real tokenizer still counts every prompt's tokens.
"""

from __future__ import annotations

import json
import re

import pytest

from streamchat.config import Settings
from tests.api.inprocess import ANSWER_WORD, InProcess, StartInProcess
from tests.support import assert_error

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
HI = [{"role": "user", "content": "hi"}]
TOO_LONG = "1" * 9000  # one token per digit: far past the context (the model's native one is 8192)
JSON = {"content-type": "application/json"}

# (method, path, request keyword arguments, status, param named in the error or None to skip)
CASES = [
    # malformed bodies
    ("POST", CHAT, {"content": b'{"messages": ', "headers": JSON}, 400, None),
    ("POST", CHAT, {"content": b"[1, 2]", "headers": JSON}, 400, None),
    ("POST", CHAT, {"content": b"", "headers": JSON}, 400, None),
    ("POST", CHAT, {"content": b'{"messages": [{"role": "user", "content": "\xff"}]}', "headers": JSON}, 400, None),
    ("POST", CHAT, {"content": b"[" * 20000, "headers": JSON}, 400, None),
    ("POST", COMPLETIONS, {"content": b'{"prompt": "hi",', "headers": JSON}, 400, None),
    ("POST", "/stream", {"content": b'{"prompt": ', "headers": JSON}, 400, None),
    ("POST", "/", {"content": b"not json", "headers": JSON}, 400, None),
    # missing fields and wrong types
    ("POST", CHAT, {"json": {}}, 400, "messages"),
    ("POST", CHAT, {"json": {"messages": "hi"}}, 400, "messages"),
    ("POST", CHAT, {"json": {"messages": [{"role": "wizard", "content": "hi"}]}}, 400, None),
    ("POST", CHAT, {"json": {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}}, 400, "messages"),
    ("POST", CHAT, {"json": {"messages": HI, "temperature": "hot"}}, 400, "temperature"),
    ("POST", CHAT, {"json": {"messages": HI, "max_tokens": "many"}}, 400, "max_tokens"),
    ("POST", CHAT, {"json": {"messages": HI, "stop": 5}}, 400, None),
    ("POST", COMPLETIONS, {"json": {}}, 400, "prompt"),
    ("POST", COMPLETIONS, {"json": {"prompt": 5}}, 400, None),
    ("POST", COMPLETIONS, {"json": {"prompt": ["a", "b"]}}, 400, "prompt"),
    ("POST", COMPLETIONS, {"json": {"prompt": [10**9]}}, 400, "prompt"),
    ("POST", "/stream", {"json": {}}, 400, "prompt"),
    ("POST", "/stream", {"json": {"prompt": 5}}, 400, "prompt"),
    ("POST", "/stream", {"json": {"prompt": "hi", "history": "abc"}}, 400, "history"),
    ("POST", "/stream", {"json": {"prompt": "hi", "history": [["only the question"]]}}, 400, None),
    ("GET", "/stream", {}, 400, None),
    ("GET", "/stream", {"params": {"prompt": "hi", "history": "not json"}}, 400, "history"),
    ("GET", "/stream", {"params": {"prompt": "hi", "history": '[["a"]]'}}, 400, None),
    ("GET", "/stream", {"params": {"prompt": "hi", "history": "[" * 5000}}, 400, "history"),
    ("GET", "/stream", {"params": {"prompt": "hi", "top_p": "abc"}}, 400, None),
    ("POST", "/", {"json": {"history": []}}, 400, "prompt"),
    ("POST", "/", {"json": {"prompt": ["hi"]}}, 400, "prompt"),
    ("POST", "/", {"json": {"prompt": "hi", "max_length": "long"}}, 400, "max_length"),
    # empty prompt / empty messages
    ("POST", CHAT, {"json": {"messages": []}}, 400, "messages"),
    ("POST", COMPLETIONS, {"json": {"prompt": ""}}, 400, "prompt"),
    ("POST", COMPLETIONS, {"json": {"prompt": []}}, 400, "prompt"),
    ("POST", "/stream", {"json": {"prompt": ""}}, 400, "prompt"),
    ("POST", "/stream", {"json": {"prompt": "   "}}, 400, "prompt"),
    ("GET", "/stream", {"params": {"prompt": ""}}, 400, None),
    ("POST", "/", {"json": {"prompt": ""}}, 400, "prompt"),
    # out of range
    ("POST", CHAT, {"json": {"messages": HI, "temperature": 2.5}}, 400, "temperature"),
    ("POST", CHAT, {"json": {"messages": HI, "temperature": -0.1}}, 400, "temperature"),
    ("POST", CHAT, {"json": {"messages": HI, "top_p": 0}}, 400, "top_p"),
    ("POST", CHAT, {"json": {"messages": HI, "top_p": 1.5}}, 400, "top_p"),
    ("POST", CHAT, {"json": {"messages": HI, "max_tokens": 0}}, 400, "max_tokens"),
    ("POST", CHAT, {"json": {"messages": HI, "max_tokens": -5}}, 400, "max_tokens"),
    ("POST", COMPLETIONS, {"json": {"prompt": "hi", "temperature": 3}}, 400, "temperature"),
    ("POST", COMPLETIONS, {"json": {"prompt": "hi", "top_p": -1}}, 400, "top_p"),
    ("POST", COMPLETIONS, {"json": {"prompt": "hi", "max_tokens": 0}}, 400, "max_tokens"),
    ("POST", "/stream", {"json": {"prompt": "hi", "temperature": 2.5}}, 400, "temperature"),
    ("POST", "/stream", {"json": {"prompt": "hi", "top_p": 0}}, 400, "top_p"),
    ("POST", "/stream", {"json": {"prompt": "hi", "max_length": 1}}, 400, "max_length"),
    ("GET", "/stream", {"params": {"prompt": "hi", "temperature": 9}}, 400, None),
    ("GET", "/stream", {"params": {"prompt": "hi", "max_length": 0}}, 400, None),
    ("POST", "/", {"json": {"prompt": "hi", "temperature": -1}}, 400, "temperature"),
    ("POST", "/", {"json": {"prompt": "hi", "top_p": 2}}, 400, "top_p"),
    # more than one choice
    ("POST", CHAT, {"json": {"messages": HI, "n": 2}}, 400, "n"),
    ("POST", COMPLETIONS, {"json": {"prompt": "hi", "n": 3}}, 400, "n"),
    ("POST", COMPLETIONS, {"json": {"prompt": "hi", "best_of": 2}}, 400, "best_of"),
    # unknown model
    ("POST", CHAT, {"json": {"messages": HI, "model": "gpt-nope"}}, 404, "model"),
    ("POST", COMPLETIONS, {"json": {"prompt": "hi", "model": "gpt-nope"}}, 404, "model"),
    ("GET", "/v1/models/gpt-nope", {}, 404, None),
]


def case_id(case: tuple) -> str:
    method, path, kwargs, status, _ = case
    detail = json.dumps(kwargs.get("json", kwargs.get("params", kwargs.get("content", b"")[:24])), default=repr)
    return f"{method} {path} {detail[:60]} -> {status}"


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "param"), CASES, ids=[case_id(c) for c in CASES])
async def test_bad_input(
    inprocess: InProcess, method: str, path: str, kwargs: dict, status: int, param: str | None
) -> None:
    assert_error(await inprocess.client.request(method, path, **kwargs), status, param)
    assert inprocess.runner.prompts == [], "a refused request reached the engine"


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("POST", CHAT, {"json": {"messages": [{"role": "user", "content": TOO_LONG}]}}),
        ("POST", COMPLETIONS, {"json": {"prompt": TOO_LONG}}),
        ("POST", "/stream", {"json": {"prompt": TOO_LONG}}),
        ("GET", "/stream", {"params": {"prompt": TOO_LONG}}),
        ("POST", "/", {"json": {"prompt": TOO_LONG}}),
    ],
    ids=["chat", "completions", "stream-post", "stream-get", "chatglm"],
)
async def test_prompt_past_the_context_names_token_counts(
    inprocess: InProcess, method: str, path: str, kwargs: dict
) -> None:
    error = assert_error(await inprocess.client.request(method, path, **kwargs), 400)
    assert error["code"] == "context_length_exceeded", error
    numbers = [int(n) for n in re.findall(r"\d+", error["message"])]
    assert any(n >= len(TOO_LONG) for n in numbers), error["message"]  # the prompt's size in tokens
    assert "token" in error["message"]


async def test_completion_past_the_context_names_token_counts(inprocess: InProcess) -> None:
    context = (await inprocess.client.get("/v1/models")).json()["data"][0]["max_model_len"]
    prompt_tokens = context - 500  # the prompt fits, the answer asked for does not
    r = await inprocess.client.post(COMPLETIONS, json={"prompt": "1" * prompt_tokens, "max_tokens": 1000})
    error = assert_error(r, 400, param="max_tokens")
    assert {str(context), str(prompt_tokens), "1000"} <= set(re.findall(r"\d+", error["message"]))


async def test_server_still_serves_after_bad_input(inprocess: InProcess) -> None:
    """Every bad input of this module first, on the same app, then a good request."""
    for method, path, kwargs, status, _ in CASES:
        assert (await inprocess.client.request(method, path, **kwargs)).status_code == status
    r = await inprocess.client.post(COMPLETIONS, json={"prompt": "Hello", "max_tokens": 2, "temperature": 0})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 2
    assert r.json()["choices"][0]["text"] == ANSWER_WORD * 2


@pytest.mark.parametrize(
    ("settings", "prompt", "code"),
    [
        (Settings(max_prompt_tokens=10), "word " * 50, "prompt_too_long"),
        (Settings(), TOO_LONG, "context_length_exceeded"),
    ],
    ids=["over-max-prompt-tokens", "past-the-context"],
)
async def test_a_completion_prompt_too_long_is_named_prompt(
    start_inprocess: StartInProcess, settings: Settings, prompt: str, code: str
) -> None:
    """Regression: errors named 'messages', a field completion requests do not have."""
    async with start_inprocess(settings) as server:
        r = await server.client.post(COMPLETIONS, json={"prompt": prompt, "max_tokens": 2})
    assert assert_error(r, 400)["code"] == code
    assert_error(r, 400, param="prompt")


async def test_max_completion_tokens_over_the_limit_is_named_max_completion_tokens(
    start_inprocess: StartInProcess,
) -> None:
    """Regression: the error named 'max_tokens', which the client never sent."""
    async with start_inprocess(Settings(max_tokens_limit=8)) as server:
        r = await server.client.post(CHAT, json={"messages": HI, "max_completion_tokens": 9})
    assert assert_error(r, 400)["code"] == "max_tokens_too_large"
    assert_error(r, 400, param="max_completion_tokens")
