"""Speculative decoding is on for a lone greedy stream, and /metrics reports its acceptance."""

from __future__ import annotations

import re

import httpx

PARAGRAPH = (
    "The committee met on Tuesday to review the budget. After a long discussion, the members agreed to "
    "increase funding for the library by ten percent and to postpone the new parking lot until next year."
)


def counter(http: httpx.Client, name: str) -> float:
    return float(re.search(rf"^{name}_total (\S+)$", http.get("/metrics").text, re.M).group(1))


def test_a_copying_answer_keeps_drafts_and_the_metrics_say_how_many(http: httpx.Client) -> None:
    names = ("streamchat_spec_draft_tokens", "streamchat_spec_accepted_tokens")
    before = [counter(http, n) for n in names]
    body = {
        "messages": [{"role": "user", "content": f"Repeat this paragraph exactly:\n\n{PARAGRAPH}"}],
        "max_tokens": 48,
        "temperature": 0,
        "repetition_penalty": 1.0,
    }
    answer = http.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"]
    drafted, kept = (counter(http, n) - b for n, b in zip(names, before, strict=True))
    assert answer and 0 < kept <= drafted
