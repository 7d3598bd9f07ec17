"""GLM GGUFs on the llama.cpp engine: `chatglm` (from GlmForCausalLM) and `glm4` (from Glm4ForCausalLM),
the same tiny random models the transformers engine serves, converted to F32 by llama.cpp's converter.

How close the logits must be: llama.cpp runs attention in half precision on the CPU (f16 KV cache,
f16 queries for K·Q, f16 accumulation of the weighted values), which moves these logits (std ~1.6)
by ~2e-3 on average and up to ~2e-2 from a float32 transformers forward. A reference whose attention
rounds where llama.cpp rounds (`f16_attention.py`) is ~20-50 times closer: ~1e-4 on average, up to
2.6e-3 where float32 summation order flipped an f16 rounding (measured over 24 positions x 49k
logits). So: at most 5e-3 from that reference, ten times closer to it on average than to float32
(the half-precision attention is the whole gap, not a bug hiding in it), and the same greedy token
as float32 at every position.
"""

from __future__ import annotations

from pathlib import Path

import pytest

llama = pytest.importorskip("llama_cpp", reason="the llamacpp engine needs llama-cpp-python")

import torch  # noqa: E402

from streamchat.engine.llamacpp.loader import LoadedGGUF, load_gguf  # noqa: E402
from streamchat.engine.llamacpp.runner import LlamaCppRunner  # noqa: E402
from streamchat.engine.model_files import gguf_metadata  # noqa: E402
from streamchat.engine.transformers.loader import LoadedModel, load_transformers  # noqa: E402
from streamchat.engine.types import FinishReason, GenerationRequest, SamplingParams  # noqa: E402

from ..glm_family import OTHER_QUESTIONS, PLANTED, SAMPLING, STOPS, GlmModel, models_for, needs_gguf, prompt  # noqa: E402
from ..test_llm_engine import run, text, tokens  # noqa: E402
from . import f16_attention  # noqa: E402
from .test_runner import llama_tokenize, make_engine  # noqa: E402

GREEDY = SamplingParams(max_tokens=12, temperature=0.0)
ARCHITECTURE = {"glm": "chatglm", "glm4": "glm4"}
TOLERANCE = 5e-3
CONTEXT = 64  # the `chatglm` GGUF says 64: its converter reads `seq_length`, else the hidden size


@pytest.fixture(scope="module")
def glm_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, GlmModel]:
    return models_for(tmp_path_factory)


@pytest.fixture(scope="module", params=["glm", "glm4"])
def glm(
    request: pytest.FixtureRequest, glm_models: dict[str, GlmModel], tmp_path_factory
) -> tuple[GlmModel, LoadedGGUF]:
    model = glm_models[request.param]
    return model, load_gguf(str(needs_gguf(model)), tmp_path_factory.mktemp("cache"), None)


@pytest.fixture(scope="module")
def reference(glm: tuple[GlmModel, LoadedGGUF], tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    model, _ = glm
    return load_transformers(str(model.folder), "cpu", "float32", tmp_path_factory.mktemp("cache"), None, "float32")


def test_llama_cpp_runs_the_glm_architectures(glm: tuple[GlmModel, LoadedGGUF]) -> None:
    model, loaded = glm
    assert gguf_metadata(needs_gguf(model))["general.architecture"] == ARCHITECTURE[model.name]
    assert loaded.model.n_vocab == len(loaded.tokenizer)


def test_every_glm_stop_token_ends_an_answer(glm: tuple[GlmModel, LoadedGGUF]) -> None:
    """Regression: llama.cpp's own end-of-generation set has `<|endoftext|>` and `<|user|>` (the
    converter's EOT) but not `<|observation|>`, the turn a tool call hands over."""
    _, loaded = glm
    stops = {loaded.tokenizer.convert_tokens_to_ids(t) for t in STOPS}
    assert stops <= loaded.eos_token_ids
    observation = loaded.tokenizer.convert_tokens_to_ids("<|observation|>")
    assert not llama.llama_vocab_is_eog(loaded.model.vocab, observation), "llama.cpp now counts it itself"


def test_prompt_ids_are_the_same_for_both_engines_and_llama_cpps_tokenizer(
    glm: tuple[GlmModel, LoadedGGUF], reference: LoadedModel
) -> None:
    _, loaded = glm
    messages = [{"role": "user", "content": "你好, what is 12345 + 678?"}]
    ids = prompt(loaded.tokenizer, messages[0]["content"])
    assert ids == prompt(reference.tokenizer, messages[0]["content"])
    rendered = loaded.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered.startswith("[gMASK]<sop><|user|>\n") and rendered.endswith("<|assistant|>")
    assert ids == llama_tokenize(loaded, rendered)


def test_teacher_forced_logits_match_transformers(glm: tuple[GlmModel, LoadedGGUF], reference: LoadedModel) -> None:
    _, loaded = glm
    question = "你好，请介绍一下你自己。"
    ids = prompt(loaded.tokenizer, question)
    forced = loaded.tokenizer.encode("\n我是一个人工智能助手, 12345!", add_special_tokens=False)
    assert len(ids) + len(forced) <= CONTEXT
    runner = LlamaCppRunner(
        loaded.model, n_ctx_seq=CONTEXT, max_num_seqs=1, max_batch_tokens=64, threads=1, park_slots=0
    )
    got = [runner.forward(0, [ids], [0])[0]]  # a prefill, then one token per forward, as the engine decodes
    got += [runner.forward(0, [[t]], [len(ids) + i])[0] for i, t in enumerate(forced[:-1])]
    llama_logits = torch.stack(got).double()

    def transformers_logits(attention: str) -> torch.Tensor:
        reference.model.set_attn_implementation(attention)
        with torch.no_grad():
            out = reference.model(torch.tensor([ids + forced])).logits[0].double()
        return out[len(ids) - 1 : -1]

    float32 = transformers_logits("sdpa")
    rounded = transformers_logits(f16_attention.NAME)
    left, gap = (llama_logits - rounded).abs(), (llama_logits - float32).abs()
    assert left.max() <= TOLERANCE, f"llama.cpp is {left.max():.2e} from a reference with its f16 attention"
    assert gap.mean() > 10 * left.mean(), f"f16 attention leaves {left.mean():.1e} of {gap.mean():.1e} unexplained"
    assert torch.equal(llama_logits.argmax(-1), float32.argmax(-1))


def test_each_planted_stop_ends_the_greedy_answer_alone_and_in_a_batch(glm: tuple[GlmModel, LoadedGGUF]) -> None:
    """The same answers as on the transformers engine (glm_family.py computed them in float32)."""
    model, loaded = glm
    engine = make_engine(loaded, max_num_seqs=8, n_ctx_seq=CONTEXT)
    questions = [*PLANTED, *OTHER_QUESTIONS]
    alone = {q: run(engine, [GenerationRequest(prompt(loaded.tokenizer, q), GREEDY, "a")])["a"] for q in questions[:4]}
    together = run(engine, [GenerationRequest(prompt(loaded.tokenizer, q), GREEDY, q) for q in questions])
    for q in alone:
        assert tokens(together[q]) == tokens(alone[q]), f"'{q}' changed in a batch"
    for q, (stop, _) in PLANTED.items():
        deltas = alone[q]
        assert tokens(deltas) == model.answers[q], f"'{q}' did not end on {stop}"
        assert deltas[-1].finish_reason is FinishReason.STOP
        assert text(deltas) == loaded.tokenizer.decode(model.answers[q][:-1], skip_special_tokens=True)


def test_sampling_defaults_come_from_the_gguf(glm: tuple[GlmModel, LoadedGGUF]) -> None:
    """The converter copies generation_config.json's sampling values into `general.sampling.*`."""
    _, loaded = glm
    assert loaded.sampling_defaults == pytest.approx(SAMPLING)


def test_a_llama_cpp_load_failure_names_the_architecture(tmp_path: Path, glm: tuple[GlmModel, LoadedGGUF]) -> None:
    model, _ = glm
    broken = tmp_path / "broken.gguf"
    data = needs_gguf(model).read_bytes()
    broken.write_bytes(data[: len(data) // 2])  # metadata intact, tensors cut short
    with pytest.raises(RuntimeError, match=f"architecture '{ARCHITECTURE[model.name]}'"):
        load_gguf(str(broken), tmp_path / "cache", None)
