"""`api/tool_calls.py`: `<tool_call>` blocks read back exactly, whole and as they stream."""

from __future__ import annotations

import json

import pytest

from streamchat.api.tool_calls import ToolCallStream, json_value_end, message, read

TWO = (
    'Let me check.<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": "x}\\"]"}}\n</tool_call>\n'
    '<tool_call>\n{"name":"get_weather","arguments":{"city":"北京"}}\n</tool_call>'
)


def test_content_and_calls_of_a_whole_answer() -> None:
    answer = read(TWO, final=True)
    assert answer.content == "Let me check."
    assert [(c.name, json.loads(c.arguments), c.complete) for c in answer.calls] == [
        ("add", {"a": 1, "b": 'x}"]'}, True),
        ("get_weather", {"city": "北京"}, True),
    ]


def test_message_without_content_has_null_content() -> None:
    m = message('<tool_call>\n{"name": "f", "arguments": {}}\n</tool_call>')
    assert m["content"] is None and m["tool_calls"][0]["function"] == {"name": "f", "arguments": "{}"}
    assert message("just text <tool") == {"role": "assistant", "content": "just text <tool"}


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
def test_streaming_in_any_pieces_sends_each_part_once(size: int) -> None:
    stream, deltas = ToolCallStream(), []
    pieces = [TWO[i : i + size] for i in range(0, len(TWO), size)]
    for i, piece in enumerate(pieces):
        deltas += stream.feed(piece, final=i == len(pieces) - 1)
    content = "".join(d.get("content", "") for d in deltas)
    calls: dict[int, dict] = {}
    for d in deltas:
        for call in d.get("tool_calls", []):
            if "id" in call:
                assert call["index"] not in calls
                calls[call["index"]] = {"name": call["function"]["name"], "arguments": call["function"]["arguments"]}
            else:
                calls[call["index"]]["arguments"] += call["function"]["arguments"]
    assert content == "Let me check."
    assert [c["name"] for c in calls.values()] == ["add", "get_weather"]
    assert [json.loads(c["arguments"]) for c in calls.values()] == [{"a": 1, "b": 'x}"]'}, {"city": "北京"}]
    assert "<" not in content


def test_text_that_only_looks_like_a_marker_start_is_released() -> None:
    stream = ToolCallStream()
    assert stream.feed("a <tool", final=False) == [{"content": "a "}]
    assert stream.feed("s are useful", final=True) == [{"content": "<tools are useful"}]
    assert not stream.called


@pytest.mark.parametrize(
    ("text", "end"),
    [('{"a": [1, {"b": "}"}]} tail', 22), ('"str\\"ing" x', 10), ("123, 4", 3), ("true}", 4), ("[1, 2", 5)],
)
def test_json_value_end(text: str, end: int) -> None:
    assert json_value_end(text, 0) == end
