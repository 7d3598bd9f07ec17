"""Loading models that ship their own code: which engine serves them, and old code under
transformers 5 fixed where safe or refused with its cause and fix named."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch

from streamchat.config import Settings
from streamchat.engine.async_engine import AsyncEngine
from streamchat.engine.factory import build_engine
from streamchat.engine.remote_code.compat import RemoteCodeError
from streamchat.engine.remote_code.engine import StreamChatAsyncEngine
from streamchat.engine.remote_code.shipped import RemoteCodeRefusedError
from streamchat.engine.types import Delta, GenerationRequest, SamplingParams
from tests.engine.remote_code.other_models import (
    add_late_attributes_tokenizer,
    write_old_cache_model,
    write_remote_llama,
)
from tests.engine.remote_code.tiny_glm import write_tiny_glm


def settings(folder: Path, **more) -> Settings:
    return Settings(model=str(folder), trust_remote_code=True, device="cpu", max_num_seqs=4, **more)


async def answer(engine: AsyncEngine, prompt_ids: list[int], max_tokens: int = 40) -> list[Delta]:
    engine.start()
    try:
        request = GenerationRequest(prompt_ids, SamplingParams(max_tokens=max_tokens, temperature=0.0))
        return [d async for d in engine.generate(request)]
    finally:
        engine.stop()


def chat_ids(built, question: str) -> list[int]:
    from streamchat.chat.prompt import render

    return render(built.tokenizer, [{"role": "user", "content": question}])


def test_without_the_flag_nothing_of_the_folder_runs(tmp_path: Path, glm_tokenizer) -> None:
    folder = write_tiny_glm(tmp_path / "glm", glm_tokenizer, progress_file=tmp_path / "progress")
    with pytest.raises(RemoteCodeRefusedError, match="--trust-remote-code") as info:
        build_engine(Settings(model=str(folder)))
    assert "modeling_tinyglm.py" in str(info.value)
    assert not (tmp_path / "progress").exists()


def test_a_model_with_stream_chat_and_no_standard_cache_answers_through_stream_chat(
    tmp_path: Path, glm_tokenizer
) -> None:
    built = build_engine(settings(write_tiny_glm(tmp_path / "glm", glm_tokenizer)))
    assert isinstance(built.engine, StreamChatAsyncEngine)
    assert built.max_model_len == 2048  # ChatGLM-6B's max_sequence_length
    deltas = asyncio.run(answer(built.engine, chat_ids(built, "你好")))
    assert "".join(d.text for d in deltas) == "第1轮。OK，你问：你好🌊"


def test_a_model_whose_forward_takes_the_cache_goes_to_the_batching_engine(tmp_path: Path, glm_tokenizer) -> None:
    from transformers import AutoModelForCausalLM

    folder = write_remote_llama(tmp_path / "llama", glm_tokenizer)
    built = build_engine(settings(folder))
    assert type(built.engine) is AsyncEngine
    prompt = glm_tokenizer.encode("The sea is")
    deltas = asyncio.run(answer(built.engine, prompt, max_tokens=8))
    ours = [t for d in deltas for t in d.token_ids]
    reference = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
    expected = reference.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False)[0, len(prompt) :]
    assert ours == expected.tolist()[: len(ours)] and len(ours) == 8


def test_a_model_that_never_calls_post_init_is_given_the_call(tmp_path: Path, glm_tokenizer) -> None:
    from transformers import AutoModel

    folder = write_tiny_glm(tmp_path / "glm", glm_tokenizer, calls_post_init=False)
    with pytest.raises(AttributeError, match="all_tied_weights_keys"):  # what transformers 5 alone does
        AutoModel.from_pretrained(folder, trust_remote_code=True)
    built = build_engine(settings(folder))
    deltas = asyncio.run(answer(built.engine, chat_ids(built, "你好")))
    assert "".join(d.text for d in deltas) == "第1轮。OK，你问：你好🌊"


def test_a_chat_that_calls_generate_without_generation_mixin_is_given_it(tmp_path: Path, glm_tokenizer) -> None:
    from transformers import AutoModel

    folder = write_tiny_glm(tmp_path / "glm", glm_tokenizer, streams=False)
    plain = AutoModel.from_pretrained(folder, trust_remote_code=True)
    with pytest.raises(AttributeError, match="generate"):  # what transformers 5 alone does
        plain.chat(glm_tokenizer, "你好", [])
    built = build_engine(settings(folder))
    deltas = asyncio.run(answer(built.engine, chat_ids(built, "你好")))
    assert "".join(d.text for d in deltas) == "第1轮。OK，你问：你好🌊"


def test_a_tokenizer_that_sets_its_attributes_late_is_refused_naming_cause_and_fix(
    tmp_path: Path, glm_tokenizer
) -> None:
    folder = add_late_attributes_tokenizer(write_tiny_glm(tmp_path / "glm", glm_tokenizer))
    with pytest.raises(RemoteCodeError) as info:
        build_engine(settings(folder))
    message = str(info.value)
    assert "tokenizer" in message and "`letters`" in message
    assert "super().__init__()" in message and "Fix:" in message


def test_a_forward_written_for_the_tuple_cache_without_stream_chat_is_refused_naming_it(
    tmp_path: Path, glm_tokenizer
) -> None:
    folder = write_old_cache_model(tmp_path / "old", glm_tokenizer)
    with pytest.raises(RemoteCodeError) as info:
        build_engine(settings(folder))
    message = str(info.value)
    assert "tuples" in message and "Cache" in message and "no stream_chat" in message
    assert "Fix:" in message and "-hf" in message


def test_operator_defaults_stream_chat_cannot_honour_are_refused_at_start(tmp_path: Path, glm_tokenizer) -> None:
    folder = write_tiny_glm(tmp_path / "glm", glm_tokenizer)
    with pytest.raises(ValueError, match="repetition_penalty"):
        build_engine(settings(folder, sampling_defaults="repetition_penalty=1.1"))
    built = build_engine(settings(folder, sampling_defaults="temperature=0.3"))
    assert built.sampling_defaults == {"temperature": 0.3}
