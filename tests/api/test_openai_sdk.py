"""The official `openai` SDK against the real server: chat and completions, streamed and not."""

from __future__ import annotations

import openai
import pytest
from openai.types.chat import ChatCompletion

from tests.support import assert_error

QUESTION = [{"role": "user", "content": "Name three colours of the rainbow."}]
GREEDY = {"temperature": 0, "max_tokens": 16}
COMPLETION = {"prompt": "The capital of France is Paris. The capital of Italy is", "temperature": 0, "max_tokens": 12}


def streamed_chat(oai: openai.OpenAI, **kw) -> tuple[list, str]:
    chunks = list(oai.chat.completions.create(stream=True, **kw))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return chunks, text


@pytest.fixture(scope="module")
def greedy_chat(base_url: str, model_name: str) -> ChatCompletion:
    with openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", timeout=60.0, max_retries=0) as client:
        return client.chat.completions.create(model=model_name, messages=QUESTION, **GREEDY)


def test_models_lists_the_served_model(oai: openai.OpenAI, model_name: str) -> None:
    assert [m.id for m in oai.models.list()] == [model_name]
    assert oai.models.retrieve(model_name).id == model_name


def test_chat_non_streamed(greedy_chat: ChatCompletion, model_name: str) -> None:
    r = greedy_chat
    assert (r.object, r.model) == ("chat.completion", model_name)
    (choice,) = r.choices
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert 0 < r.usage.completion_tokens <= GREEDY["max_tokens"]
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_greedy_stream_equals_non_streamed(oai: openai.OpenAI, model_name: str, greedy_chat) -> None:
    chunks, text = streamed_chat(
        oai, model=model_name, messages=QUESTION, stream_options={"include_usage": True}, **GREEDY
    )
    assert text == greedy_chat.choices[0].message.content
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"  # the first chunk names the role
    *answer, usage = chunks
    assert [c.choices[0].finish_reason for c in answer][-1] == greedy_chat.choices[0].finish_reason
    assert all(c.choices[0].finish_reason is None for c in answer[:-1])
    assert all(c.usage is None for c in answer)
    assert usage.choices == []  # the usage chunk has empty choices
    assert usage.usage.model_dump() == greedy_chat.usage.model_dump()


def test_finish_reason_length(oai: openai.OpenAI, model_name: str) -> None:
    r = oai.chat.completions.create(model=model_name, messages=QUESTION, temperature=0, max_tokens=3)
    assert (r.choices[0].finish_reason, r.usage.completion_tokens) == ("length", 3)


def test_stop_string_ends_the_answer_and_never_appears(oai: openai.OpenAI, model_name: str, greedy_chat) -> None:
    full = greedy_chat.choices[0].message.content
    words = full.split()
    assert len(words) >= 3, full
    stop = words[2]
    expected = full[: full.index(stop)]
    r = oai.chat.completions.create(model=model_name, messages=QUESTION, stop=[stop], **GREEDY)
    assert (r.choices[0].message.content, r.choices[0].finish_reason) == (expected, "stop")
    chunks, text = streamed_chat(oai, model=model_name, messages=QUESTION, stop=stop, **GREEDY)
    assert (text, chunks[-1].choices[0].finish_reason) == (expected, "stop")
    assert stop not in text


def test_seed_repeats_a_sampled_answer(oai: openai.OpenAI, model_name: str) -> None:
    kw = {"model": model_name, "prompt": "Once upon a time", "temperature": 1.0, "max_tokens": 12, "seed": 1234}
    first = oai.completions.create(**kw).choices[0].text
    again = "".join(c.choices[0].text for c in oai.completions.create(stream=True, **kw) if c.choices)
    assert first and again == first


def test_completion_non_streamed_and_streamed(oai: openai.OpenAI, model_name: str) -> None:
    whole = oai.completions.create(model=model_name, **COMPLETION)
    assert whole.object == "text_completion"
    assert whole.choices[0].text
    chunks = list(
        oai.completions.create(model=model_name, stream=True, stream_options={"include_usage": True}, **COMPLETION)
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].choices == []
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump()


def test_completion_stop_string(oai: openai.OpenAI, model_name: str) -> None:
    full = oai.completions.create(model=model_name, **COMPLETION).choices[0].text
    stop = full.split()[1] if len(full.split()) > 1 else full.strip()
    r = oai.completions.create(model=model_name, stop=stop, **COMPLETION)
    assert (r.choices[0].text, r.choices[0].finish_reason) == (full[: full.index(stop)], "stop")


def test_unknown_model_is_a_404_the_sdk_raises(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        oai.chat.completions.create(model="no-such-model", messages=QUESTION, max_tokens=4)
    assert_error(info.value.response, 404, param="model")
