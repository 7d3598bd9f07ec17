"""GLM models through the transformers engine: GLM-4's chat template, every stop token it lists,
greedy answers the same alone and in a batch (tiny random `GlmForCausalLM` / `Glm4ForCausalLM`)."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest

from streamchat.chat.prompt import render
from streamchat.engine.model_files import ModelNotFoundError
from streamchat.engine.transformers.loader import LoadedModel, _eos_ids, load_transformers
from streamchat.engine.types import FinishReason, GenerationRequest, SamplingParams

from ..glm_family import OTHER_QUESTIONS, PLANTED, SAMPLING, STOPS, GlmModel, models_for, needs_gguf, prompt
from ..test_llm_engine import make_engine, run, text, tokens

GREEDY = SamplingParams(max_tokens=12, temperature=0.0)


@pytest.fixture(scope="module")
def glm_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, GlmModel]:
    return models_for(tmp_path_factory)


@pytest.fixture(scope="module", params=["glm", "glm4"])
def glm(
    request: pytest.FixtureRequest, glm_models: dict[str, GlmModel], tmp_path_factory
) -> tuple[GlmModel, LoadedModel]:
    model = glm_models[request.param]
    cache = tmp_path_factory.mktemp("cache")
    return model, load_transformers(str(model.folder), "cpu", "float32", cache, None, "float32")


def stop_ids(loaded: LoadedModel) -> set[int]:
    return {loaded.tokenizer.convert_tokens_to_ids(t) for t in STOPS}


def test_every_eos_id_the_generation_config_lists_ends_an_answer(glm: tuple[GlmModel, LoadedModel]) -> None:
    _, loaded = glm
    assert loaded.eos_token_ids == stop_ids(loaded)
    assert len(loaded.eos_token_ids) == 3


def test_a_glm_vocabulary_stops_on_its_turn_tokens_when_its_config_lists_one_eos(
    glm: tuple[GlmModel, LoadedModel],
) -> None:
    """Regression: only the listed EOS ids counted, so a GLM folder listing one EOS ran on past `<|user|>`."""
    _, loaded = glm
    one_eos = copy.deepcopy(loaded.model.generation_config)
    one_eos.eos_token_id = loaded.tokenizer.eos_token_id
    assert _eos_ids(SimpleNamespace(generation_config=one_eos), loaded.tokenizer) == stop_ids(loaded)


def test_the_chat_template_renders_glm_4s_prompt(glm: tuple[GlmModel, LoadedModel]) -> None:
    _, loaded = glm
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "你好！"},
        {"role": "user", "content": "Again?"},
    ]
    ids = render(loaded.tokenizer, messages)
    text_ = loaded.tokenizer.decode(ids)
    assert text_ == "[gMASK]<sop><|system|>\nBe brief.<|user|>\n你好<|assistant|>\n你好！<|user|>\nAgain?<|assistant|>"
    for special in ("[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>"):
        assert loaded.tokenizer.convert_tokens_to_ids(special) in ids, f"{special} is not one token"


def test_each_planted_stop_ends_the_greedy_answer_alone_and_in_a_batch(glm: tuple[GlmModel, LoadedModel]) -> None:
    model, loaded = glm
    engine = make_engine(loaded)
    questions = [*PLANTED, *OTHER_QUESTIONS]
    alone = {q: run(engine, [GenerationRequest(prompt(loaded.tokenizer, q), GREEDY, "a")])["a"] for q in questions[:4]}
    batch = [GenerationRequest(prompt(loaded.tokenizer, q), GREEDY, q) for q in questions]
    together = run(engine, batch)
    for q in alone:
        assert tokens(together[q]) == tokens(alone[q]), f"'{q}' changed in a batch"
    for q, (stop, _) in PLANTED.items():
        deltas = alone[q]
        assert tokens(deltas) == model.answers[q], f"'{q}' did not end on {stop}"
        assert deltas[-1].finish_reason is FinishReason.STOP
        assert text(deltas) == loaded.tokenizer.decode(model.answers[q][:-1], skip_special_tokens=True)


def test_sampling_defaults_come_from_generation_config(glm: tuple[GlmModel, LoadedModel]) -> None:
    _, loaded = glm
    assert loaded.sampling_defaults == pytest.approx(SAMPLING)


def test_a_glm_gguf_is_refused_with_the_engine_that_runs_it(glm: tuple[GlmModel, LoadedModel], tmp_path: Path) -> None:
    """Regression: transformers' own "architecture chatglm is not supported yet" named no way out."""
    model, _ = glm
    with pytest.raises(ModelNotFoundError, match=r"--engine llamacpp"):
        load_transformers(str(needs_gguf(model)), "cpu", "float32", tmp_path, None, "float32")
