"""`api/openai_shapes.py`: the envelope of every chunk and of the whole answer."""

from __future__ import annotations

import time

from streamchat.api.openai_shapes import ChatShape, CompletionShape, Shape
from streamchat.engine.types import Delta, FinishReason, Usage


def test_created_is_set_once_and_kept_when_given() -> None:
    """Regression: `created` was a field that `__post_init__` always overwrote."""
    before = int(time.time())
    chat = ChatShape("chatcmpl-1", "m")
    assert before <= chat.created <= int(time.time())
    given = Shape("x", "m", "chat.completion.chunk", "chat.completion", created=1_700_000_000)
    assert given.envelope()["created"] == 1_700_000_000


def test_every_chunk_and_the_whole_answer_share_one_envelope() -> None:
    shape = CompletionShape("cmpl-1", "m")
    last = Delta("!", (5,), FinishReason.STOP, Usage(3, 2))
    (chunk,) = shape.chunks(Delta("hi", (4,)))
    whole = shape.whole("hi!", last, [])
    assert (chunk["id"], chunk["created"], chunk["object"]) == ("cmpl-1", shape.created, "text_completion")
    assert (whole["id"], whole["created"]) == ("cmpl-1", shape.created)
    assert whole["choices"][0] == {"index": 0, "text": "hi!", "logprobs": None, "finish_reason": "stop"}
    assert whole["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
