"""Long prompts prefilled in large forwards, with greedy answers that do not depend on the neighbours."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

pytest.importorskip("llama_cpp", reason="the llamacpp engine needs llama-cpp-python")

from streamchat.config import default_cache_dir  # noqa: E402
from streamchat.engine.contracts import PrefillRow  # noqa: E402
from streamchat.engine.llamacpp.loader import LoadedGGUF, load_gguf  # noqa: E402
from streamchat.engine.llamacpp.prefill import TILED_FROM, invariant_plan, reusable  # noqa: E402
from streamchat.engine.llamacpp.runner import LlamaCppRunner  # noqa: E402
from streamchat.engine.types import GenerationRequest, SamplingParams  # noqa: E402

from ..test_llm_engine import QUESTIONS, run, tokens  # noqa: E402
from .test_runner import chat, make_engine  # noqa: E402

STORY = (
    "The harbour town kept its lighthouse lit through every storm, and the keeper wrote down each ship "
    "that passed, its flag, its cargo and the hour. "
)


@pytest.fixture(scope="module")
def gguf() -> LoadedGGUF:
    return load_gguf(None, default_cache_dir(), None)


def test_a_long_prompt_feeds_alone_in_large_pieces_and_never_leaves_a_short_one() -> None:
    assert invariant_plan([PrefillRow(0, 1500, 1500)], 512) == [512]
    assert invariant_plan([PrefillRow(1024, 1500, 1500), PrefillRow(0, 30, 30)], 512) == [476]  # alone
    assert invariant_plan([PrefillRow(0, 550, 550)], 512) == [550 - TILED_FROM]  # not 512 + 38
    assert invariant_plan([PrefillRow(0, 100, 100)], 50) == [100]  # a tiled forward needs 64 of its tokens


def test_short_prompts_and_recomputed_output_feed_63_at_a_time_side_by_side() -> None:
    rows = [PrefillRow(0, 30, 30), PrefillRow(200, 200, 300), PrefillRow(0, 40, 40), PrefillRow(0, 900, 900)]
    assert invariant_plan(rows, 512) == [30, 63, 40]  # output past a tiled prompt: one query at a time
    assert invariant_plan(rows[:3], 80) == [30, 50]


def test_a_parked_prefix_is_reused_only_where_a_fresh_prefill_computes_the_same() -> None:
    assert reusable(30, 35, 40) == 30  # short prompts: every position one query at a time
    assert reusable(30, 35, 200) == 0  # the new prompt is tiled, the parked one was not
    assert reusable(500, 300, 800) == 300  # past the parked prompt came its output, one query at a time
    assert reusable(300, 300, 330) == 330 - TILED_FROM  # what is left of the tiled prompt fills a tiled forward
    assert reusable(299, 300, 300) == 300 - TILED_FROM  # the same prompt again
    assert reusable(340, 300, 300) == 340  # the same prompt and some output (a preempted row): all alike


def test_tiled_keys_and_values_do_not_depend_on_where_the_prompt_was_cut(gguf: LoadedGGUF) -> None:
    """ggml's tiled kernel computes each query alone: any cut into pieces of 64+ gives the same logits."""
    ids = [random.Random(0).randrange(1000, 20000) for _ in range(600)]
    r = LlamaCppRunner(gguf.model, n_ctx_seq=1024, max_num_seqs=1, max_batch_tokens=600, threads=2)
    results = []
    for cuts in ([600], [512, 88], [64, 100, 300, 136], [200, 200, 200]):
        r.cache.release()
        pos = 0
        for n in cuts:
            logits = r.forward(0, [ids[pos : pos + n]], [pos])
            pos += n
        results.append(logits)
    assert all(x.equal(results[0]) for x in results[1:])
    r.close()


def test_a_long_prompt_answers_the_same_alone_and_beside_decoding_and_prefilling_neighbours(gguf: LoadedGGUF) -> None:
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True, logprobs=True)
    long_prompts = [chat(gguf, STORY * k + q) for k, q in ((16, QUESTIONS[0]), (22, QUESTIONS[2]))]
    assert all(len(p) > 512 for p in long_prompts)

    def answer(deltas: list) -> tuple[list[int], list[float]]:
        return tokens(deltas), [lp.logprob for d in deltas for lp in d.logprobs]

    alone = [answer(next(iter(run(make_engine(gguf, 4, n_ctx_seq=1024), [GenerationRequest(p, params)]).values())))
             for p in long_prompts]  # fmt: skip
    engine = make_engine(gguf, 8, n_ctx_seq=1024)
    got: dict[str, list] = defaultdict(list)
    for q in QUESTIONS[:5]:  # short neighbours, decoding when the long prompts arrive
        engine.add(GenerationRequest(chat(gguf, q), SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)))
    for _ in range(3):
        engine.step()
    late = [GenerationRequest(p, params) for p in long_prompts]
    for r in late:
        engine.add(r)
    while engine.has_work:
        for rid, d in engine.step():
            got[rid].append(d)
    assert [answer(got[r.request_id]) for r in late] == alone
