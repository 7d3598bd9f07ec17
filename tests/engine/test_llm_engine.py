"""The transformers engine in-process: batching never changes what a request gets."""

from __future__ import annotations

from collections import defaultdict

import pytest

from streamchat.chat.prompt import render
from streamchat.engine.llm_engine import LLMEngine
from streamchat.engine.transformers.loader import LoadedModel
from streamchat.engine.transformers.runner import TransformersRunner
from streamchat.engine.types import Delta, FinishReason, GenerationRequest, SamplingParams

QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain gravity to a child.",
    "List three fruits.",
    "What is 12 times 7?",
    "Say hello in Spanish.",
    "Describe a cat.",
    "Why is the sky blue?",
]


def make_engine(loaded: LoadedModel, max_num_seqs: int = 16, cache_tokens: int = 100_000, **kw) -> LLMEngine:
    runner = TransformersRunner(loaded.model)
    return LLMEngine(
        runner, loaded.tokenizer, loaded.eos_token_ids, loaded.max_model_len, max_num_seqs, cache_tokens, **kw
    )


def prompt(loaded: LoadedModel, question: str) -> list[int]:
    return render(loaded.tokenizer, [{"role": "user", "content": question}])


def run(engine: LLMEngine, requests: list[GenerationRequest]) -> dict[str, list[Delta]]:
    for r in requests:
        engine.add(r)
    out: dict[str, list[Delta]] = defaultdict(list)
    for _ in range(10_000):
        if not engine.has_work:
            break
        for rid, delta in engine.step():
            out[rid].append(delta)
    assert not engine.has_work, "engine did not drain"
    return out


def tokens(deltas: list[Delta]) -> list[int]:
    return [t for d in deltas for t in d.token_ids]


def text(deltas: list[Delta]) -> str:
    return "".join(d.text for d in deltas)


GREEDY = SamplingParams(max_tokens=24, temperature=0.0)


def test_greedy_answer_is_the_same_alone_and_in_a_full_batch(loaded: LoadedModel) -> None:
    engine = make_engine(loaded)
    target = prompt(loaded, QUESTIONS[0])
    alone = run(engine, [GenerationRequest(target, GREEDY, "alone")])["alone"]
    batch = [GenerationRequest(prompt(loaded, q), GREEDY, f"b{i}") for i, q in enumerate(QUESTIONS * 2)]
    together = run(engine, batch)
    assert tokens(together["b0"]) == tokens(alone)
    assert tokens(together["b8"]) == tokens(alone)
    assert text(together["b0"]) == loaded.tokenizer.decode(
        tokens(alone)[:-1] if alone[-1].finish_reason is FinishReason.STOP else tokens(alone), skip_special_tokens=True
    )


def test_seeded_sampling_is_reproducible_and_independent_of_the_batch(loaded: LoadedModel) -> None:
    engine = make_engine(loaded)
    params = SamplingParams(max_tokens=20, temperature=1.0, top_p=0.95, seed=1234)
    target = prompt(loaded, QUESTIONS[1])
    first = tokens(run(engine, [GenerationRequest(target, params, "a")])["a"])
    second = tokens(run(engine, [GenerationRequest(target, params, "a")])["a"])
    others = [
        GenerationRequest(prompt(loaded, q), SamplingParams(max_tokens=20, temperature=0.9), f"o{i}")
        for i, q in enumerate(QUESTIONS)
    ]
    in_batch = tokens(run(engine, [*others, GenerationRequest(target, params, "a")])["a"])
    assert first == second == in_batch
    different_seed = SamplingParams(max_tokens=20, temperature=1.0, top_p=0.95, seed=99)
    assert tokens(run(engine, [GenerationRequest(target, different_seed, "d")])["d"]) != first


def test_each_request_keeps_its_own_parameters_in_one_batch(loaded: LoadedModel) -> None:
    engine = make_engine(loaded)
    target = prompt(loaded, QUESTIONS[2])
    alone = tokens(run(engine, [GenerationRequest(target, GREEDY, "g")])["g"])
    mixed = [
        GenerationRequest(target, GREEDY, "g"),
        GenerationRequest(target, SamplingParams(max_tokens=24, temperature=1.5, top_k=50), "hot"),
        GenerationRequest(
            target,
            SamplingParams(max_tokens=24, temperature=0.7, min_p=0.1, repetition_penalty=1.3, frequency_penalty=1.0),
            "pen",
        ),
        GenerationRequest(target, SamplingParams(max_tokens=24, temperature=1.0, top_k=1), "k1"),
    ]
    out = run(engine, mixed)
    assert tokens(out["g"]) == alone
    assert tokens(out["k1"]) == alone, "top_k=1 must equal greedy"


def test_min_tokens_and_ignore_eos_force_exact_lengths(loaded: LoadedModel) -> None:
    engine = make_engine(loaded)
    target = prompt(loaded, "Say OK.")
    out = run(
        engine,
        [
            GenerationRequest(target, SamplingParams(max_tokens=40, temperature=0, ignore_eos=True), "ign"),
            GenerationRequest(target, SamplingParams(max_tokens=40, temperature=0, min_tokens=40), "min"),
            GenerationRequest(target, SamplingParams(max_tokens=40, temperature=0), "free"),
        ],
    )
    for rid in ("ign", "min"):
        assert len(tokens(out[rid])) == 40
        assert out[rid][-1].finish_reason is FinishReason.LENGTH
        assert out[rid][-1].usage.completion_tokens == 40
    assert out["free"][-1].finish_reason is FinishReason.STOP, "a short answer ends on EOS by itself"
    assert len(tokens(out["free"])) < 40


def test_stop_token_ids_and_stop_strings_end_the_answer(loaded: LoadedModel) -> None:
    engine = make_engine(loaded)
    target = prompt(loaded, QUESTIONS[2])
    free = run(engine, [GenerationRequest(target, GREEDY, "f")])["f"]
    free_tokens, free_text = tokens(free), text(free)
    stop_id = free_tokens[5]
    by_id = run(
        engine,
        [GenerationRequest(target, SamplingParams(max_tokens=24, temperature=0, stop_token_ids=(stop_id,)), "i")],
    )["i"]
    assert tokens(by_id) == free_tokens[: free_tokens.index(stop_id) + 1]
    assert by_id[-1].finish_reason is FinishReason.STOP
    word = free_text.split()[3]
    by_text = run(engine, [GenerationRequest(target, SamplingParams(max_tokens=24, temperature=0, stop=(word,)), "s")])[
        "s"
    ]
    assert text(by_text) == free_text[: free_text.index(word)]
    assert by_text[-1].finish_reason is FinishReason.STOP


def test_logprobs_describe_the_chosen_token(loaded: LoadedModel) -> None:
    engine = make_engine(loaded)
    params = SamplingParams(max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    out = run(engine, [GenerationRequest(prompt(loaded, QUESTIONS[4]), params, "l")])["l"]
    for d in out:
        (lp,) = d.logprobs
        assert lp.logprob <= 0.0
        assert len(lp.top) == 3
        assert lp.top[0][1] >= lp.top[1][1] >= lp.top[2][1]
        assert lp.top[0][0] == lp.token and lp.top[0][1] == pytest.approx(lp.logprob)


def test_frequency_penalty_reduces_repetition(loaded: LoadedModel) -> None:
    engine = make_engine(loaded)
    target = prompt(loaded, "Repeat the word 'cat' many times.")
    plain = tokens(
        run(engine, [GenerationRequest(target, SamplingParams(max_tokens=40, temperature=0, ignore_eos=True), "p")])[
            "p"
        ]
    )
    penalised = tokens(
        run(
            engine,
            [
                GenerationRequest(
                    target,
                    SamplingParams(
                        max_tokens=40, temperature=0, ignore_eos=True, frequency_penalty=2.0, presence_penalty=1.0
                    ),
                    "q",
                )
            ],
        )["q"]
    )
    assert len(set(penalised)) > len(set(plain))


def test_a_request_arriving_mid_batch_starts_before_the_running_ones_finish(loaded: LoadedModel) -> None:
    engine = make_engine(loaded)
    long = SamplingParams(max_tokens=60, temperature=0, ignore_eos=True)
    for i in range(3):
        engine.add(GenerationRequest(prompt(loaded, QUESTIONS[i]), long, f"run{i}"))
    for _ in range(5):
        engine.step()
    engine.add(GenerationRequest(prompt(loaded, QUESTIONS[5]), GREEDY, "late"))
    seen_late = False
    for _ in range(3):
        outputs = dict(engine.step())
        if "late" in outputs:
            seen_late = True
            break
    assert seen_late, "the late request got no token within a few steps"
    assert engine.num_running == 4, "the running requests are still going"
    run(engine, [])


def test_preemption_under_a_tight_cache_changes_no_answer(loaded: LoadedModel) -> None:
    params = SamplingParams(max_tokens=30, temperature=0, ignore_eos=True)

    def requests() -> list[GenerationRequest]:
        return [GenerationRequest(prompt(loaded, q), params, f"r{i}") for i, q in enumerate(QUESTIONS[:4])]

    roomy = run(make_engine(loaded), requests())
    tight_engine = make_engine(loaded, cache_tokens=100)  # two ~40-token prompts fit, their answers do not
    tight = run(tight_engine, requests())
    assert tight_engine.stats.preempted > 0, "the budget was meant to force preemption"
    for rid in roomy:
        assert tokens(tight[rid]) == tokens(roomy[rid])
        assert text(tight[rid]) == text(roomy[rid])


def test_abort_frees_the_row_and_the_others_go_on(loaded: LoadedModel) -> None:
    engine = make_engine(loaded)
    target = prompt(loaded, QUESTIONS[0])
    alone = tokens(run(engine, [GenerationRequest(target, GREEDY, "x")])["x"])
    engine.add(GenerationRequest(target, GREEDY, "keep"))
    engine.add(GenerationRequest(prompt(loaded, QUESTIONS[1]), GREEDY, "drop"))
    got: dict[str, list[Delta]] = defaultdict(list)
    for rid, d in engine.step() + engine.step():
        got[rid].append(d)
    delta = engine.abort("drop")
    assert delta is not None and delta.finish_reason is FinishReason.ABORT
    assert engine.num_running == 1
    for rid, d in run(engine, []).items():
        got[rid].extend(d)
    assert tokens(got["keep"]) == alone
    assert engine.stats.aborted == 1 and engine.num_running == 0


@pytest.mark.parametrize(
    "params",
    [SamplingParams(max_tokens=24, temperature=0.0), SamplingParams(max_tokens=24, temperature=0.9, seed=77)],
    ids=["greedy", "seeded"],
)
def test_an_answer_continued_from_its_tokens_ends_as_the_uninterrupted_one(
    loaded: LoadedModel, params: SamplingParams
) -> None:
    """A stream taken over by another process goes back in with the tokens already sent: what
    follows, text included, is what the uninterrupted answer had after them."""
    engine = make_engine(loaded)
    target = prompt(loaded, QUESTIONS[7])
    whole = run(engine, [GenerationRequest(target, params, "whole")])["whole"]
    sent = 9  # deltas already sent by the process that died
    prefix = tuple(tokens(whole[:sent]))
    rest = run(engine, [GenerationRequest(target, params, "rest", output_token_ids=prefix)])["rest"]
    assert tokens(rest) == tokens(whole[sent:])
    assert text(whole[:sent]) + text(rest) == text(whole)
    assert rest[-1].usage is not None and rest[-1].usage.completion_tokens == len(tokens(whole))


def test_an_answer_whose_sent_tokens_already_ended_it_ends_at_once(loaded: LoadedModel) -> None:
    engine = make_engine(loaded)
    target = prompt(loaded, QUESTIONS[4])
    whole = tokens(run(engine, [GenerationRequest(target, GREEDY, "whole")])["whole"])
    again = run(engine, [GenerationRequest(target, GREEDY, "again", output_token_ids=tuple(whole))])["again"]
    assert len(again) == 1 and again[0].finished and again[0].text == "" and not again[0].token_ids
