"""The llama.cpp runner inside the shared engine: same guarantees as the transformers runner."""

from __future__ import annotations

import random
import re

import pytest

pytest.importorskip("llama_cpp", reason="the llamacpp engine needs llama-cpp-python (pip install llama-cpp-python)")

from streamchat.chat.prompt import render  # noqa: E402
from streamchat.config import Settings, default_cache_dir  # noqa: E402
from streamchat.engine.factory import _llamacpp_engine, choose_backend  # noqa: E402
from streamchat.engine.llamacpp_loader import LoadedGGUF, load_gguf  # noqa: E402
from streamchat.engine.llamacpp_runner import LlamaCppRunner  # noqa: E402
from streamchat.engine.llm_engine import LLMEngine  # noqa: E402
from streamchat.engine.loader import ModelNotFoundError  # noqa: E402
from streamchat.engine.types import FinishReason, GenerationRequest, SamplingParams  # noqa: E402

from .test_llm_engine import QUESTIONS, run, text, tokens  # noqa: E402

GREEDY = SamplingParams(max_tokens=16, temperature=0.0)
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def gguf() -> LoadedGGUF:
    return load_gguf(None, default_cache_dir(), None)


def make_engine(gguf: LoadedGGUF, max_num_seqs: int = 16, prefix_reuse: bool = False) -> LLMEngine:
    runner = LlamaCppRunner(
        gguf.model, n_ctx=2048, max_num_seqs=max_num_seqs, max_batch_tokens=512 + max_num_seqs, threads=1
    )
    return LLMEngine(
        runner, gguf.tokenizer, gguf.eos_token_ids, gguf.max_model_len, max_num_seqs, 2048, prefix_reuse=prefix_reuse
    )


def chat(gguf: LoadedGGUF, *turns: str) -> list[int]:
    """Alternating user/assistant contents, ending with a user turn."""
    roles = ("user", "assistant")
    return render(gguf.tokenizer, [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)])


def test_tokenizer_matches_llama_cpp(gguf: LoadedGGUF) -> None:
    messages = [{"role": "user", "content": "Repeat: 你好，世界 🎉 café"}]
    ids = render(gguf.tokenizer, messages)
    template_text = gguf.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert ids == gguf.model.tokenize(template_text)


def test_auto_picks_llamacpp_for_gguf_and_refuses_other_models() -> None:
    assert choose_backend(Settings()) == "llamacpp"
    assert choose_backend(Settings(engine="transformers")) == "transformers"
    with pytest.raises(ModelNotFoundError, match=r"\.gguf"):
        _llamacpp_engine(Settings(engine="llamacpp", model="HuggingFaceTB/SmolLM2-135M-Instruct"))


def test_row_moves_keep_llama_cpp_memory_and_lengths_in_step(gguf: LoadedGGUF) -> None:
    """The scheduler's moves, swaps and restarts in a random order; lengths must match llama.cpp's."""
    rng = random.Random(0)
    runner = LlamaCppRunner(gguf.model, n_ctx=1024, max_num_seqs=6, max_batch_tokens=64, threads=1)
    cache = runner.cache
    for _ in range(60):
        op = rng.choice(["forward", "forward", "move", "swap", "restart", "release"])
        a, b = rng.sample(range(cache.n_rows), 2)
        if op == "forward":
            runner.forward(a, [[rng.randrange(1000, 2000) for _ in range(rng.randint(1, 4))]], [cache.lens[a]])
        elif op == "move":
            cache.move_row(a, b)
        elif op == "swap":
            cache.swap_rows(a, b)
        elif op == "restart":
            runner.forward(a, [[5, 6]], [0])
        else:
            cache.release()
        assert cache.lens == [cache.stored(row) for row in range(cache.n_rows)], op
    runner.close()


def test_greedy_alone_equals_greedy_in_a_mixed_batch(gguf: LoadedGGUF) -> None:
    """Exact while no neighbour frees cells mid-flight, so every row here runs to the same length.

    llama.cpp reuses freed cells, so after a neighbour finishes a row's later keys can sit before
    its earlier ones, and flash attention then sums in another order: rounding-level differences
    that may flip a near-tie later in the answer (see the abort test).
    """
    fixed = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    prompts = [chat(gguf, q) for q in QUESTIONS]
    alone = [tokens(next(iter(run(make_engine(gguf), [GenerationRequest(p, fixed)]).values()))) for p in prompts]
    engine = make_engine(gguf)
    greedy = [GenerationRequest(p, fixed) for p in prompts]
    sampled = [
        GenerationRequest(p, SamplingParams(max_tokens=12, temperature=0.9, seed=7, ignore_eos=True)) for p in prompts
    ]
    mixed = [r for pair in zip(greedy, sampled, strict=True) for r in pair]
    out = run(engine, mixed)
    assert [tokens(out[r.request_id]) for r in greedy] == alone
    assert engine.num_running == 0


def test_abort_frees_the_row_and_the_others_continue(gguf: LoadedGGUF) -> None:
    steps_before_abort, checked_after = 5, 3
    long = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    prompts = [chat(gguf, q) for q in QUESTIONS[:3]]
    alone = [tokens(next(iter(run(make_engine(gguf), [GenerationRequest(p, long)]).values()))) for p in prompts]
    engine = make_engine(gguf)
    reqs = [GenerationRequest(p, long) for p in prompts]
    for r in reqs:
        engine.add(r)
    got: dict[str, list] = {r.request_id: [] for r in reqs}
    for _ in range(steps_before_abort):
        for rid, d in engine.step():
            got[rid].append(d)
    assert engine.num_running == 3
    aborted = engine.abort(reqs[1].request_id)
    assert aborted is not None and aborted.finish_reason is FinishReason.ABORT
    assert engine.num_running == 2
    while engine.has_work:
        for rid, d in engine.step():
            got[rid].append(d)
    assert engine.num_running == 0
    cache = engine.runner.cache
    assert [cache.stored(row) for row in range(cache.n_rows)] == [0] * cache.n_rows, "finished rows keep no cells"
    n = steps_before_abort + checked_after  # the last row moved into the aborted one's row: same answer
    for i in (0, 2):
        assert len(tokens(got[reqs[i].request_id])) == long.max_tokens
        assert tokens(got[reqs[i].request_id])[:n] == alone[i][:n]


def test_stop_strings_never_leak(gguf: LoadedGGUF) -> None:
    prompt = chat(gguf, "Write a haiku about the sea.")
    params = SamplingParams(max_tokens=24, temperature=0.0)
    full = text(next(iter(run(make_engine(gguf), [GenerationRequest(prompt, params)]).values())))
    words = full.split()
    assert len(words) > 4, full
    stop = words[3][1:] + " " + words[4][:2]  # spans tokens and a space
    stopped = SamplingParams(max_tokens=24, temperature=0.0, stop=(stop,))
    deltas = next(iter(run(make_engine(gguf), [GenerationRequest(prompt, stopped)]).values()))
    assert deltas[-1].finish_reason is FinishReason.STOP
    got = text(deltas)
    assert stop not in got
    assert got == full[: full.index(stop)]


def test_chinese_deltas_reassemble_exactly(gguf: LoadedGGUF) -> None:
    prompt = chat(gguf, "Translate 'Hello, world' into Chinese.")  # it answers in Chinese characters
    deltas = next(iter(run(make_engine(gguf), [GenerationRequest(prompt, GREEDY)]).values()))
    ids = tokens(deltas)
    decoded = gguf.tokenizer.decode(ids, skip_special_tokens=True)
    assert text(deltas) == decoded
    assert CJK.search(decoded), f"no Chinese came back: {decoded!r}"
    assert all("\ufffd" not in d.text for d in deltas)


def test_prefix_reuse_gives_the_same_answer_with_less_prefill(gguf: LoadedGGUF) -> None:
    first = chat(gguf, "What is the capital of France?")
    answers, stats = [], []
    for reuse in (False, True):
        engine = make_engine(gguf, prefix_reuse=reuse)
        turn1 = tokens(next(iter(run(engine, [GenerationRequest(first, GREEDY)]).values())))
        reply = gguf.tokenizer.decode(turn1, skip_special_tokens=True)
        second = chat(gguf, "What is the capital of France?", reply, "And of Italy?")
        before = engine.stats.prefilled_tokens
        answers.append(tokens(next(iter(run(engine, [GenerationRequest(second, GREEDY)]).values()))))
        stats.append((engine.stats.prefilled_tokens - before, engine.stats.reused_tokens, len(second)))
    assert answers[0] == answers[1]
    (plain_prefill, _, n), (reuse_prefill, reused, _) = stats
    assert plain_prefill == n
    assert reused >= len(first)  # at least the whole first prompt came from the parked turn
    assert reuse_prefill == n - reused
