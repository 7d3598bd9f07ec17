"""Speculative decoding by prompt lookup: fewer forwards, the same answers."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("llama_cpp", reason="the llamacpp engine needs llama-cpp-python")

from streamchat.config import default_cache_dir  # noqa: E402
from streamchat.engine.answer_text import AnswerText  # noqa: E402
from streamchat.engine.llamacpp.loader import LoadedGGUF, load_gguf  # noqa: E402
from streamchat.engine.llm_engine import LLMEngine  # noqa: E402
from streamchat.engine.sequence import Sequence  # noqa: E402
from streamchat.engine.speculation import FIRST_DRAFT, KEEP_AT_LEAST, Lookup, NgramIndex, PromptLookup  # noqa: E402
from streamchat.engine.types import FinishReason, GenerationRequest, SamplingParams  # noqa: E402

from ..test_llm_engine import QUESTIONS, run, text, tokens  # noqa: E402
from .test_runner import chat, make_engine  # noqa: E402

PARAGRAPH = (
    "The committee met on Tuesday to review the budget. After a long discussion, the members agreed to "
    "increase funding for the library by ten percent and to postpone the new parking lot until next year."
)
EDIT = f"Rewrite this paragraph, changing Tuesday to Friday and nothing else:\n\n{PARAGRAPH}"


@pytest.fixture(scope="module")
def gguf() -> LoadedGGUF:
    return load_gguf(None, default_cache_dir(), None)


def test_drafts_follow_the_latest_longest_earlier_occurrence() -> None:
    index = NgramIndex()
    assert index.draft([1, 2, 3, 4, 5, 9, 1, 2, 3], 3) == [4, 5, 9]  # 1 2 3 seen before, then 4 5 9
    assert index.draft([1, 2, 3, 4, 5, 9, 1, 2, 3, 4, 7, 8, 3, 4], 2) == [7, 8]  # "3 4" latest: followed by 7 8
    assert NgramIndex().draft([5, 6, 7, 8], 4) == []  # nothing repeats
    assert NgramIndex().draft([5, 6, 5], 4) == []  # one token alone is no evidence


class NoDecoder:
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return ""


def seq(prompt: list[int], params: SamplingParams, output: list[int] | None = None) -> Sequence:
    s = Sequence(GenerationRequest(prompt, params), AnswerText(NoDecoder(), prompt, ()), None)
    s.output_ids = list(output or [])
    return s


def test_only_greedy_rows_draft_and_only_at_low_concurrency() -> None:
    greedy = SamplingParams(max_tokens=50, temperature=0.0)
    prompt = [1, 2, 3, 4, 5, 6, 1, 2]
    lookup = PromptLookup(max_draft=3, max_running=2, max_model_len=100)
    drafts = lookup.propose([seq(prompt, greedy), seq(prompt, SamplingParams(temperature=0.7))])
    assert drafts is not None and drafts.tokens == [[3, 4, 5], []] and drafts.width == 4
    assert lookup.propose([seq(prompt, greedy)] * 3) is None  # more rows decode than drafting pays for
    assert lookup.propose([seq([7, 8, 9], greedy)]) is None  # nothing to draft
    near_end = PromptLookup(max_draft=3, max_running=2, max_model_len=10).propose([seq(prompt, greedy)])
    assert near_end is not None and near_end.tokens == [[3]]  # the answer reaches the context after one more
    short = SamplingParams(max_tokens=2, temperature=0.0)
    assert lookup.propose([seq(prompt, short, [9])]) is None  # one token left to write: nothing to draft


def test_a_lone_row_fed_a_throwaway_query_carries_a_one_token_guess_there() -> None:
    greedy = SamplingParams(max_tokens=50, temperature=0.0)
    prompt = [5, 6, 7, 8, 6]  # "6" was followed by 7; no n-gram of two repeats
    padded = PromptLookup(max_draft=8, max_running=1, max_model_len=100, pads_lone_row=lambda pos: pos >= 4)
    s = seq(prompt, greedy)
    s.num_cached = 4
    guess = padded.propose([s])
    assert guess is not None and guess.free and guess.tokens == [[7]] and guess.width == 2
    s.num_cached = 3
    assert padded.propose([s]) is None  # no throwaway query there: a guess would cost a token
    assert padded.propose([s, seq(prompt, greedy)]) is None  # rows in company need none
    sampled = seq(prompt, SamplingParams(max_tokens=50, temperature=0.7))
    sampled.num_cached = 4
    assert padded.propose([sampled]) is None
    assert (
        PromptLookup(max_draft=0, max_running=1, max_model_len=100, pads_lone_row=lambda pos: True).propose([s]) is None
    )  # speculation off: nothing fed but the token


def test_drafts_grow_while_kept_shrink_when_not_and_pause_when_never_kept() -> None:
    lookup = Lookup()
    assert lookup.limit == FIRST_DRAFT
    lookup.kept(FIRST_DRAFT, FIRST_DRAFT, max_draft=16)
    assert lookup.limit == 2 * FIRST_DRAFT  # a whole draft kept: the text is being copied
    lookup.kept(8, 3, max_draft=16)
    assert lookup.limit == 4 and lookup.pause == 0  # one past what was kept
    lookup.kept(4, 0, max_draft=16)
    lookup.kept(1, 0, max_draft=16)
    assert (lookup.limit, lookup.pause, lookup.backoff) == (1, 2, 4)  # pauses double while nothing is kept
    prompt = [1, 2, 3, 4, 1, 2]
    s = seq(prompt, SamplingParams(max_tokens=50, temperature=0.0))
    s.lookup = lookup
    drafts = PromptLookup(max_draft=16, max_running=1, max_model_len=100)
    assert [drafts.propose([s]) for _ in range(2)] == [None, None] and lookup.pause == 0  # paused two steps
    assert drafts.propose([s]).tokens == [[3]]  # then drafts again, one token


def test_drafts_that_keep_less_than_half_pause_even_when_some_are_kept() -> None:
    lookup = Lookup()
    lookup.kept(4, 1, max_draft=8)
    assert (lookup.pause, lookup.backoff) == (1, 2)  # a quarter kept: drafting costs more than it saves
    lookup.kept(1, 1, max_draft=8)
    assert lookup.kept_share < KEEP_AT_LEAST and lookup.pause == 2  # prose: a kept token now and then
    lookup.pause = 0  # the pause has passed
    for _ in range(3):
        lookup.kept(8, 8, max_draft=8)
    assert lookup.kept_share > KEEP_AT_LEAST and lookup.pause == 0 and lookup.backoff == 1  # copying again


def drafting(engine: LLMEngine, max_running: int = 1) -> LLMEngine:
    engine.speculation = PromptLookup(8, max_running, engine.max_model_len)
    return engine


def answer(deltas: list) -> tuple[list[int], list[float], str]:
    return tokens(deltas), [lp.logprob for d in deltas for lp in d.logprobs], text(deltas)


def test_a_greedy_answer_is_the_same_with_drafts_in_fewer_steps(gguf: LoadedGGUF) -> None:
    prompt = chat(gguf, EDIT)
    for params in (
        SamplingParams(max_tokens=60, temperature=0.0, logprobs=True, repetition_penalty=1.0),
        SamplingParams(max_tokens=60, temperature=0.0, logprobs=True, repetition_penalty=1.15),
        SamplingParams(max_tokens=23, temperature=0.0, repetition_penalty=1.0),  # ends inside a draft
    ):
        plain, fast = make_engine(gguf, 4), drafting(make_engine(gguf, 4))
        expected = next(iter(run(plain, [GenerationRequest(prompt, params)]).values()))
        got = next(iter(run(fast, [GenerationRequest(prompt, params)]).values()))
        assert answer(got) == answer(expected)
        assert got[-1].finish_reason == expected[-1].finish_reason
        assert fast.stats.accepted_tokens > 0 and fast.stats.steps < plain.stats.steps
    copied = answer(got)[2]
    assert "Friday" in copied or "committee" in copied, copied


def test_guesses_past_256_cells_save_steps_and_change_no_answer(gguf: LoadedGGUF) -> None:
    prompt = chat(gguf, f"{PARAGRAPH}\n\n" * 6 + "Tell a long story about this committee.")
    assert len(prompt) > 256  # every decode step of this row alone is fed a throwaway second query
    params = SamplingParams(max_tokens=48, temperature=0.0, logprobs=True, repetition_penalty=1.0)
    plain, guessing = make_engine(gguf, 4), make_engine(gguf, 4)
    guessing.speculation = PromptLookup(8, 0, guessing.max_model_len, guessing.runner.pads_lone_row)  # no drafts
    expected = next(iter(run(plain, [GenerationRequest(prompt, params)]).values()))
    got = next(iter(run(guessing, [GenerationRequest(prompt, params)]).values()))
    assert answer(got) == answer(expected)
    stats = guessing.stats
    assert stats.draft_tokens == 0 and stats.guessed_kept > 0 and stats.steps < plain.stats.steps


def test_stop_strings_end_a_drafted_answer_where_they_end_it_without(gguf: LoadedGGUF) -> None:
    prompt = chat(gguf, EDIT)
    full = text(next(iter(run(make_engine(gguf, 4), [GenerationRequest(prompt, SamplingParams(
        max_tokens=60, temperature=0.0, repetition_penalty=1.0))]).values())))  # fmt: skip
    stop = full.split()[6]
    params = SamplingParams(max_tokens=60, temperature=0.0, repetition_penalty=1.0, stop=(stop,))
    deltas = next(iter(run(drafting(make_engine(gguf, 4)), [GenerationRequest(prompt, params)]).values()))
    assert deltas[-1].finish_reason is FinishReason.STOP
    assert text(deltas) == full[: full.index(stop)]


def test_rows_that_do_not_draft_answer_as_without_drafts_beside_one_that_does(gguf: LoadedGGUF) -> None:
    """A seeded sampled row and a row under a grammar share drafting forwards: each takes its first
    position only, and answers exactly as it does when nobody drafts."""
    from streamchat.engine.grammar import specs
    from streamchat.engine.grammar.compiler import GrammarCompiler

    compiler = GrammarCompiler(gguf.tokenizer, gguf.eos_token_ids)
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}

    def requests() -> list[GenerationRequest]:
        return [
            GenerationRequest(chat(gguf, EDIT), SamplingParams(max_tokens=40, temperature=0.0, repetition_penalty=1.0)),
            GenerationRequest(chat(gguf, QUESTIONS[1]), SamplingParams(max_tokens=30, temperature=0.9, seed=5)),
            GenerationRequest(chat(gguf, QUESTIONS[3]), SamplingParams(max_tokens=60, temperature=0.0),
                              constraint=compiler.compile(specs.json_schema(schema), "schema")),
        ]  # fmt: skip

    plain, fast = requests(), requests()
    before = run(make_engine(gguf, 4), plain)
    engine = drafting(make_engine(gguf, 4), max_running=3)
    after = run(engine, fast)
    assert engine.stats.draft_tokens > 0
    assert [answer(after[r.request_id]) for r in fast] == [answer(before[r.request_id]) for r in plain]
    assert set(json.loads(text(after[fast[2].request_id]))) == {"ok"}
