"""Our framing through the official `openai` SDK's own SSE parser (bytes served by a mock transport).

The contrast case shows the trap is real: a comment followed by a blank line, in a stream with
`id:` lines, makes the SDK fail. Our keep-alive comment has no blank line after it.
"""

from __future__ import annotations

import httpx
import openai
import pytest

from streamchat.sse import framing


def chunk(text: str) -> dict:
    delta = {"index": 0, "delta": {"content": text}, "finish_reason": None}
    return {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [delta]}


def sdk_contents(body: bytes) -> list[str | None]:
    def handler(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    with httpx.Client(transport=httpx.MockTransport(handler)) as http_client:
        client = openai.OpenAI(base_url="http://test/v1", api_key="unused", http_client=http_client, max_retries=0)
        stream = client.chat.completions.create(model="m", messages=[], stream=True)
        return [c.choices[0].delta.content for c in stream]


def test_pings_between_events_with_ids_parse() -> None:
    body = b"".join(
        [
            framing.comment(),
            framing.encode_event(framing.to_json(chunk("你好")), id="s:0"),
            framing.comment(),
            framing.comment(),
            framing.encode_event(framing.to_json(chunk(" world\n")), id="s:1"),
            framing.comment(),
            framing.encode_event(framing.DONE, id="s:2"),
        ]
    )
    assert sdk_contents(body) == ["你好", " world\n"]


def test_a_comment_followed_by_a_blank_line_breaks_the_sdk() -> None:
    first = framing.encode_event(framing.to_json(chunk("a")), id="s:0")
    body = first + b": ping\n\n" + framing.encode_event(framing.DONE, id="s:1")
    with pytest.raises(ValueError):  # json.JSONDecodeError on the empty event
        sdk_contents(body)
