"""Prefix reuse is on by default, and a reused prefix never changes a greedy answer."""

from __future__ import annotations

import re

import httpx

CHAT = [{"role": "user", "content": "Name three colours of the rainbow."}]


def answer(http: httpx.Client, body: dict) -> str:
    return http.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"]


def reused_tokens(http: httpx.Client) -> float:
    text = http.get("/metrics").text
    return float(re.search(r"^streamchat_reused_prompt_tokens_total (\S+)$", text, re.M).group(1))


def test_a_repeated_greedy_chat_reuses_its_prefix_and_answers_the_same(http: httpx.Client) -> None:
    body = {"messages": CHAT, "max_tokens": 24, "temperature": 0}
    first = answer(http, body)
    before = reused_tokens(http)
    again = answer(http, body)
    assert reused_tokens(http) > before, "the second request should start from the first one's cells"
    follow_up = {"messages": [*CHAT, {"role": "assistant", "content": first}, {"role": "user", "content": "More?"}]}
    turn = {**body, **follow_up}
    answers = [answer(http, turn) for _ in range(2)]
    assert again == first and answers[0] == answers[1] and first
