"""A Chinese answer streams without a broken character and reassembles exactly.

SmolLM2-135M tends to answer a Chinese question in English, so the prompts make it echo a Chinese
sentence and each test checks that Chinese characters really came back.
"""

from __future__ import annotations

import json

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
