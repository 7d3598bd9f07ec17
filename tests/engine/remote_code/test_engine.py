"""The stream_chat engine behind the real `AsyncEngine`, with stand-in stream_chat functions.

What is checked here needs no model: one answer at a time, an abort closing the model's own
generator, stop strings, the answer's budget, seeds, errors named, settings refused.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import torch

from streamchat.chat.prompt import render
from streamchat.engine.async_engine import RequestNotSupportedError
from streamchat.engine.remote_code.chat_call import ChatCall
from streamchat.engine.remote_code.conversation import HistoryStyle
from streamchat.engine.remote_code.engine import StreamChatAsyncEngine, StreamChatEngine
from streamchat.engine.remote_code.prompts import TurnTokenizer
from streamchat.engine.types import Delta, FinishReason, GenerationRequest, SamplingParams

ANSWER = "你好，世界！🌊"


@dataclass
class Model:
    """A stand-in for a model's stream_chat that records what it was asked and how its loop ended."""

    answer: str = ANSWER
    gate: threading.Event = field(default_factory=threading.Event)  # each step waits for it when `held`
    held: bool = False
    log: list[str] = field(default_factory=list)
    calls: list[dict] = field(default_factory=list)

    def stream_chat(self, tokenizer, query, history, max_length=2048, do_sample=True, top_p=0.7, temperature=0.95):
        self.calls.append(dict(query=query, history=history, max_length=max_length, do_sample=do_sample,
                               top_p=top_p, temperature=temperature))  # fmt: skip
        self.log.append(f"start {query}")
        how = "finished"
        try:
            for n in range(1, len(self.answer) + 1):
                if self.held:
                    self.gate.wait(10)
                yield self.answer[:n] + ("\ufffd" if n < len(self.answer) else ""), history
        except GeneratorExit:
            how = "closed"
            raise
        finally:
            self.log.append(f"end {query} {how}")


@asynccontextmanager
async def serving(
    method, glm_tokenizer, streams: bool = True
) -> AsyncIterator[tuple[StreamChatAsyncEngine, TurnTokenizer]]:
    prompts = TurnTokenizer(glm_tokenizer, HistoryStyle.PAIRS)
    engine = StreamChatAsyncEngine(
        StreamChatEngine(ChatCall(method, streams, HistoryStyle.PAIRS), glm_tokenizer, 512), prompts
    )
    engine.start()
    try:
        yield engine, prompts
    finally:
        engine.stop()


def request(prompts: TurnTokenizer, question: str, **params) -> GenerationRequest:
    ids = render(prompts, [{"role": "user", "content": question}])
    return GenerationRequest(ids, SamplingParams(**{"max_tokens": 100, **params}))


async def collect(deltas: AsyncIterator[Delta]) -> list[Delta]:
    return [d async for d in deltas]


async def test_an_answer_streams_whole_characters_and_ends_with_usage(glm_tokenizer) -> None:
    model = Model()
    async with serving(model.stream_chat, glm_tokenizer) as (engine, prompts):
        req = request(prompts, "q", temperature=0.5, top_p=0.9)
        deltas = await collect(engine.generate(req))
    assert "".join(d.text for d in deltas) == ANSWER
    assert all("\ufffd" not in d.text for d in deltas)
    last = deltas[-1]
    assert last.finish_reason is FinishReason.STOP
    assert last.usage.prompt_tokens == len(req.prompt_token_ids)
    assert last.usage.completion_tokens == len(glm_tokenizer.encode(ANSWER, add_special_tokens=False))
    (call,) = model.calls
    assert call["max_length"] == len(req.prompt_token_ids) + 100
    assert (call["do_sample"], call["temperature"], call["top_p"]) == (True, 0.5, 0.9)
    assert model.log == ["start q", "end q finished"]


async def test_temperature_zero_asks_for_greedy_decoding(glm_tokenizer) -> None:
    model = Model()
    async with serving(model.stream_chat, glm_tokenizer) as (engine, prompts):
        await collect(engine.generate(request(prompts, "q", temperature=0.0)))
    assert model.calls[0]["do_sample"] is False


async def test_leaving_early_closes_the_models_generator_before_its_next_step(glm_tokenizer) -> None:
    model = Model(answer="很长的回答。" * 50, held=True)
    async with serving(model.stream_chat, glm_tokenizer) as (engine, prompts):
        deltas = engine.generate(request(prompts, "long"))
        model.gate.set()  # let it run; it yields as fast as it can
        got = ""
        async for d in deltas:
            got += d.text
            if len(got) >= 5:
                break
        await deltas.aclose()  # what a reader leaving does
        for _ in range(100):
            if model.log[-1].startswith("end"):
                break
            await asyncio.sleep(0.02)
        assert engine.num_pending == 0
    assert model.log == ["start long", "end long closed"]


async def test_answers_run_one_at_a_time_in_arrival_order(glm_tokenizer) -> None:
    model = Model()
    async with serving(model.stream_chat, glm_tokenizer) as (engine, prompts):
        first, second = engine.generate(request(prompts, "a")), engine.generate(request(prompts, "b"))
        texts = await asyncio.gather(collect(first), collect(second))
    assert model.log == ["start a", "end a finished", "start b", "end b finished"]
    assert ["".join(d.text for d in t) for t in texts] == [ANSWER, ANSWER]


async def test_a_waiting_request_can_be_aborted_before_it_starts(glm_tokenizer) -> None:
    model = Model(held=True)
    async with serving(model.stream_chat, glm_tokenizer) as (engine, prompts):
        second = request(prompts, "b")
        running, waiting = engine.generate(request(prompts, "a")), engine.generate(second)
        engine.abort(second.request_id)
        aborted = await collect(waiting)
        model.gate.set()
        await collect(running)
    assert aborted[-1].finish_reason is FinishReason.ABORT
    assert model.log == ["start a", "end a finished"]


async def test_a_stop_string_ends_the_answer_before_it_and_stops_the_model(glm_tokenizer) -> None:
    model = Model()
    async with serving(model.stream_chat, glm_tokenizer) as (engine, prompts):
        deltas = await collect(engine.generate(request(prompts, "q", stop=("世界",))))
    assert "".join(d.text for d in deltas) == "你好，"
    assert deltas[-1].finish_reason is FinishReason.STOP
    assert model.log[-1] == "end q closed"


async def test_the_answer_budget_ends_with_length(glm_tokenizer) -> None:
    model = Model()
    async with serving(model.stream_chat, glm_tokenizer) as (engine, prompts):
        deltas = await collect(engine.generate(request(prompts, "q", max_tokens=3)))
    assert deltas[-1].finish_reason is FinishReason.LENGTH
    assert "".join(d.text for d in deltas) == ANSWER[:3]


async def test_a_seed_makes_sampling_repeatable(glm_tokenizer) -> None:
    def stream_chat(tokenizer, query, history, max_length=0, do_sample=True, top_p=1.0, temperature=1.0):
        yield "".join(str(int(d)) for d in torch.randint(0, 10, (8,))), history

    async with serving(stream_chat, glm_tokenizer) as (engine, prompts):
        answers = [
            "".join(d.text for d in await collect(engine.generate(request(prompts, "q", seed=seed))))
            for seed in (7, 8, 7)
        ]
    assert answers[0] == answers[2] != answers[1]


async def test_a_failing_stream_chat_ends_its_answer_with_the_cause_named(glm_tokenizer) -> None:
    def stream_chat(tokenizer, query, history, max_length=0, do_sample=True, top_p=1.0, temperature=1.0):
        yield "第一", history
        raise TypeError("'DynamicCache' object is not subscriptable")

    async with serving(stream_chat, glm_tokenizer) as (engine, prompts):
        deltas = await collect(engine.generate(request(prompts, "q")))
        assert engine.alive
        after = await collect(engine.generate(request(prompts, "again")))  # the engine goes on
    assert deltas[-1].finish_reason is FinishReason.ERROR
    assert "tuples" in deltas[-1].error and "Fix:" in deltas[-1].error
    assert after[-1].finish_reason is FinishReason.ERROR


async def test_a_call_that_fails_before_its_first_yield_ends_its_answer(glm_tokenizer) -> None:
    def stream_chat(tokenizer, query, history, max_length=0, do_sample=True, top_p=1.0, temperature=1.0):
        raise AttributeError("'ChatGLMForConditionalGeneration' object has no attribute '_get_logits_warper'")

    async with serving(stream_chat, glm_tokenizer) as (engine, prompts):
        deltas = await asyncio.wait_for(collect(engine.generate(request(prompts, "q"))), 10)
    assert deltas[-1].finish_reason is FinishReason.ERROR
    assert "removed" in deltas[-1].error and "Fix:" in deltas[-1].error


async def test_a_model_with_chat_only_answers_in_one_piece(glm_tokenizer) -> None:
    def chat(tokenizer, query, history, max_length=0, do_sample=True, top_p=1.0, temperature=1.0):
        return f"答：{query}", [*history, (query, f"答：{query}")]

    async with serving(chat, glm_tokenizer, streams=False) as (engine, prompts):
        deltas = await collect(engine.generate(request(prompts, "你好")))
    assert "".join(d.text for d in deltas) == "答：你好"
    assert deltas[-1].finish_reason is FinishReason.STOP


@pytest.mark.parametrize(
    "params",
    [{"top_k": 5}, {"repetition_penalty": 1.1}, {"min_p": 0.1}, {"logprobs": True}, {"stop_token_ids": (2,)},
     {"ignore_eos": True}, {"presence_penalty": 0.5}],
)  # fmt: skip
async def test_settings_stream_chat_cannot_honour_are_refused_before_queuing(glm_tokenizer, params: dict) -> None:
    model = Model()
    async with serving(model.stream_chat, glm_tokenizer) as (engine, prompts):
        with pytest.raises(RequestNotSupportedError) as info:
            engine.generate(request(prompts, "q", **params))
        assert info.value.param == next(iter(params))
        assert engine.num_pending == 0
    assert model.calls == []
