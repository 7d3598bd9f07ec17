"""`engine/sampling_defaults.py`: where a model's sampling defaults come from, and which win."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import GenerationConfig

from streamchat.api.openai_schemas import ChatCompletionRequest
from streamchat.engine.model_files import embedded_gguf
from streamchat.engine.sampling_defaults import EMBEDDED_DEFAULTS, from_generation_config, from_gguf, merged, parse


def test_operator_text_is_parsed_and_checked() -> None:
    assert parse("repetition_penalty=1.1, temperature=0.7,top_k=40") == {
        "repetition_penalty": 1.1,
        "temperature": 0.7,
        "top_k": 40,
    }
    assert parse("") == {}
    for bad, says in (("temp=0.7", "no sampling default 'temp'"), ("top_p=2", "outside"), ("top_p", "name=value")):
        with pytest.raises(ValueError, match=says):
            parse(bad)


def test_generation_config_gives_only_what_it_sets() -> None:
    config = GenerationConfig(do_sample=True, temperature=0.6, top_p=0.9, repetition_penalty=1.05)
    assert from_generation_config(config) == {"temperature": 0.6, "top_p": 0.9, "repetition_penalty": 1.05}
    assert from_generation_config(GenerationConfig()) == {}


def test_gguf_sampling_metadata_is_read(tmp_path: Path) -> None:
    from gguf import GGUFWriter

    path = tmp_path / "tiny.gguf"
    writer = GGUFWriter(str(path), "llama")
    writer.add_float32("general.sampling.temp", 0.6)
    writer.add_int32("general.sampling.top_k", 20)
    writer.add_float32("general.sampling.penalty_repeat", 1.15)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert from_gguf(path) == pytest.approx({"temperature": 0.6, "top_k": 20, "repetition_penalty": 1.15})
    assert from_gguf(embedded_gguf()) == {}  # the embedded file says nothing: its defaults are measured


def test_the_operator_wins_over_the_embedded_defaults_which_win_over_the_model() -> None:
    model = {"temperature": 0.6, "repetition_penalty": 1.3}
    assert merged(model, embedded=False, operator={}) == model
    assert merged(model, embedded=True, operator={})["repetition_penalty"] == EMBEDDED_DEFAULTS["repetition_penalty"]
    assert merged(model, embedded=True, operator={"repetition_penalty": 1.0}) == {
        "temperature": 0.6,
        "repetition_penalty": 1.0,
    }


def test_a_request_keeps_what_it_sets_and_takes_defaults_for_the_rest() -> None:
    defaults = {"temperature": 0.6, "repetition_penalty": 1.1, "top_k": 40}
    unset = ChatCompletionRequest(messages=[{"role": "user", "content": "hi"}])
    params = unset.sampling(16, defaults=defaults)
    assert (params.temperature, params.repetition_penalty, params.top_k, params.top_p) == (0.6, 1.1, 40, 1.0)
    hi = [{"role": "user", "content": "hi"}]
    explicit = ChatCompletionRequest(messages=hi, temperature=1.0, repetition_penalty=1.0)
    params = explicit.sampling(16, defaults=defaults)
    assert (params.temperature, params.repetition_penalty, params.top_k) == (1.0, 1.0, 40)
