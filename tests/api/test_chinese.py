"""A Chinese answer streams without a broken character and reassembles exactly.

SmolLM2-135M tends to answer a Chinese question in English, so the prompts make it echo a Chinese
sentence and each test checks that Chinese characters really came back.
"""

from __future__ import annotations

import json
import re

import httpx
import openai

from tests.support import CHINESE_PROMPT, CHINESE_SENTENCE, CJK, parse_sse

ECHO_HISTORY = [["请重复：我爱你。", "我爱你。"], ["请重复：谢谢你。", "谢谢你。"]]
ECHO_PROMPT = f"请重复：{CHINESE_SENTENCE}"


def assert_chinese(text: str) -> None:
    assert len(CJK.findall(text)) >= 4, text
    assert "\ufffd" not in text


def test_completion_stream_reassembles(oai: openai.OpenAI, model_name: str) -> None:
    kw = {"model": model_name, "prompt": CHINESE_PROMPT, "temperature": 0, "max_tokens": 16}
    whole = oai.completions.create(**kw).choices[0].text
    pieces = [c.choices[0].text for c in oai.completions.create(stream=True, **kw) if c.choices]
    assert "".join(pieces) == whole
    assert_chinese(whole)
    assert all("\ufffd" not in p for p in pieces)


def test_chat_stream_reassembles(oai: openai.OpenAI, model_name: str) -> None:
    messages = []
    for question, answer in ECHO_HISTORY:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": ECHO_PROMPT})
    kw = {"model": model_name, "messages": messages, "temperature": 0, "max_tokens": 32}
    whole = oai.chat.completions.create(**kw).choices[0].message.content
    pieces = [c.choices[0].delta.content or "" for c in oai.chat.completions.create(stream=True, **kw) if c.choices]
    assert "".join(pieces) == whole
    assert_chinese(whole)


def test_seed_stream_reassembles_to_the_api_answer(http: httpx.Client) -> None:
    body = {"prompt": ECHO_PROMPT, "history": ECHO_HISTORY, "temperature": 0, "max_length": 512}
    whole = http.post("/", json=body).json()["response"]
    r = http.post("/stream", json=body)
    assert "\\u" not in r.text  # ensure_ascii=False: the characters themselves are on the wire
    pieces = [json.loads(e.data)["text"] for e in parse_sse(r.text).events[:-1]]
    assert "".join(pieces) == whole
    assert_chinese(whole)
    assert all("\ufffd" not in p for p in pieces)


KANA = re.compile(r"[\u3040-\u30ff]")
JAPANESE = [{"role": "user", "content": "日本語で挨拶してください"}]  # greedy: cut mid-character at 40, 48, 60 tokens


def test_an_answer_cut_mid_character_ends_cleanly_and_its_logprobs_hold_its_bytes(http: httpx.Client) -> None:
    """Regression: at a length cut the text ended in U+FFFD, and a token holding part of a character
    reported the bytes of U+FFFD, so the tokens' bytes did not reassemble into the text."""
    for max_tokens in (40, 48, 60):
        body = {"messages": JAPANESE, "max_tokens": max_tokens, "temperature": 0, "logprobs": True}
        answer = http.post("/v1/chat/completions", json=body).json()
        whole, prompt_tokens = answer["choices"][0], answer["usage"]["prompt_tokens"]
        text = whole["message"]["content"]
        assert whole["finish_reason"] == "length" and len(KANA.findall(text)) >= 4, text
        assert not text.endswith("\ufffd")
        assert b"".join(bytes(t["bytes"]) for t in whole["logprobs"]["content"]) == text.encode()
        assert any(t["token"].startswith("bytes:") for t in whole["logprobs"]["content"])
        with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as resp:
            events = parse_sse(resp.read().decode()).events
        chunks = [json.loads(e.data) for e in events if e.data != "[DONE]"]
        streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
        logprobs = [c["choices"][0]["logprobs"] for c in chunks if c["choices"] and c["choices"][0]["logprobs"]]
        streamed_bytes = b"".join(bytes(t["bytes"]) for lp in logprobs for t in lp["content"])
        assert streamed == text and streamed_bytes == text.encode()
        seed_body = {"prompt": JAPANESE[0]["content"], "max_length": prompt_tokens + max_tokens, "temperature": 0}
        seed = http.post("/stream", json=seed_body)
        seed_text = "".join(json.loads(e.data)["text"] for e in parse_sse(seed.text).events if e.data != "[DONE]")
        assert seed_text == text  # the seed's protocol, same prompt and length: the same clean cut
