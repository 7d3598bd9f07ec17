"""The llama.cpp runner inside the shared engine: same guarantees as the transformers runner."""

from __future__ import annotations

import random
import re
from collections import defaultdict

import pytest

llama = pytest.importorskip("llama_cpp", reason="the llamacpp engine needs llama-cpp-python")

from streamchat.chat.prompt import render  # noqa: E402
from streamchat.config import Settings, default_cache_dir  # noqa: E402
from streamchat.engine.factory import _llamacpp_engine, choose_backend  # noqa: E402
from streamchat.engine.llamacpp.loader import LoadedGGUF, load_gguf  # noqa: E402
from streamchat.engine.llamacpp.prefill import TILED_FROM  # noqa: E402
from streamchat.engine.llamacpp.prefixes import PARK_SLOTS  # noqa: E402
from streamchat.engine.llamacpp.runner import LlamaCppRunner  # noqa: E402
from streamchat.engine.llm_engine import LLMEngine  # noqa: E402
from streamchat.engine.memory import cells_per_sequence, even_share  # noqa: E402
from streamchat.engine.model_files import ModelNotFoundError  # noqa: E402
from streamchat.engine.types import FinishReason, GenerationRequest, SamplingParams  # noqa: E402

from ..test_llm_engine import QUESTIONS, run, text, tokens  # noqa: E402

GREEDY = SamplingParams(max_tokens=16, temperature=0.0)
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def gguf() -> LoadedGGUF:
    return load_gguf(None, default_cache_dir(), None)


def stored(runner: LlamaCppRunner, seq_id: int) -> int:
    """Positions llama.cpp itself holds for `seq_id`, to check the cache's own count against."""
    return llama.llama_memory_seq_pos_max(llama.llama_get_memory(runner.ctx), seq_id) + 1


def llama_tokenize(gguf: LoadedGGUF, text: str, special: bool = True) -> list[int]:
    """llama.cpp's own tokenizer, to check the transformers tokenizer the server uses against."""
    data = text.encode()
    buf = (llama.llama_token * (len(data) + 8))()
    n = llama.llama_tokenize(gguf.model.vocab, data, len(data), buf, len(buf), False, special)
    assert n >= 0
    return list(buf[:n])


def make_engine(
    gguf: LoadedGGUF,
    max_num_seqs: int = 16,
    prefix_reuse: bool = False,
    n_ctx_seq: int = 512,
    prefill_chunk: int = 512,
    cache_tokens: int | None = None,
) -> LLMEngine:
    """Sized as the factory sizes it: max_model_len is a row's stream, the rows' tokens held in all
    within `cache_tokens` (default: every row at full length)."""
    runner = LlamaCppRunner(
        gguf.model,
        n_ctx_seq=n_ctx_seq,
        max_num_seqs=max_num_seqs,
        max_batch_tokens=prefill_chunk + max_num_seqs,
        threads=1,
        park_slots=PARK_SLOTS if prefix_reuse else 0,
    )
    n = runner.n_ctx_seq
    return LLMEngine(
        runner,
        gguf.tokenizer,
        gguf.eos_token_ids,
        n,
        max_num_seqs,
        cache_tokens or max_num_seqs * n,
        prefill_chunk,
        padded_cache=False,
    )


def chat(gguf: LoadedGGUF, *turns: str) -> list[int]:
    """Alternating user/assistant contents, ending with a user turn."""
    roles = ("user", "assistant")
    return render(gguf.tokenizer, [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)])


def test_tokenizer_matches_llama_cpp(gguf: LoadedGGUF) -> None:
    messages = [{"role": "user", "content": "Repeat: 你好，世界 🎉 café"}]
    ids = render(gguf.tokenizer, messages)
    template_text = gguf.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert ids == llama_tokenize(gguf, template_text)


def test_auto_picks_llamacpp_for_gguf_and_refuses_other_models() -> None:
    assert choose_backend(Settings()) == "llamacpp"
    assert choose_backend(Settings(engine="transformers")) == "transformers"
    with pytest.raises(ModelNotFoundError, match=r"\.gguf"):
        _llamacpp_engine(Settings(engine="llamacpp", model="HuggingFaceTB/SmolLM2-135M-Instruct"))


def test_row_moves_keep_each_rows_cells_and_lengths(gguf: LoadedGGUF) -> None:
    """The scheduler's moves, swaps and restarts in a random order: lengths must match llama.cpp's,
    and each row must still hold its own sequence, bit for bit (its next logits equal a fresh run's)."""
    rng = random.Random(0)
    runner = LlamaCppRunner(gguf.model, n_ctx_seq=256, max_num_seqs=6, max_batch_tokens=64, threads=1)
    fresh = LlamaCppRunner(gguf.model, n_ctx_seq=256, max_num_seqs=1, max_batch_tokens=64, threads=1, park_slots=0)
    cache = runner.cache
    held: list[list[int]] = [[] for _ in range(cache.n_rows)]  # the tokens each row holds

    def check_rows() -> None:
        for row, ids in enumerate(held):
            if ids:
                probe = runner.forward(row, [[42]], [len(ids)])
                cache.truncate(row, len(ids))
                expected = fresh.forward(0, [ids + [42]], [0])
                assert probe.equal(expected), f"row {row} lost its cells"

    for step in range(60):
        op = rng.choice(["forward", "forward", "forward", "move", "swap", "restart", "release"])
        a, b = rng.sample(range(cache.n_rows), 2)
        if op == "forward":
            chunk = [rng.randrange(1000, 2000) for _ in range(rng.randint(1, 4))]
            runner.forward(a, [chunk], [cache.lens[a]])
            held[a] += chunk
        elif op == "move":
            cache.move_row(a, b)
            held[b], held[a] = held[a], []
        elif op == "swap":
            cache.swap_rows(a, b)
            held[a], held[b] = held[b], held[a]
        elif op == "restart":
            runner.forward(a, [[5, 6]], [0])
            held[a] = [5, 6]
        else:
            cache.release()
            held = [[] for _ in range(cache.n_rows)]
        assert cache.lens == [len(h) for h in held] == [stored(runner, row) for row in range(cache.n_rows)], op
        if step % 20 == 19:
            check_rows()
    check_rows()
    runner.close()
    fresh.close()


def test_greedy_answer_does_not_depend_on_neighbours_that_came_and_went(gguf: LoadedGGUF) -> None:
    """A request admitted after some neighbours finished, while others are mid-flight, gets the answer
    it gets alone, log-probabilities included. In one shared pool of cells its keys landed in the
    neighbours' freed cells, out of position order, and flash attention summed them in another order:
    there this test fails. With one stream per sequence its cells are always 0..n-1."""
    params = SamplingParams(max_tokens=48, temperature=0.0, ignore_eos=True, logprobs=True)
    prompts = [chat(gguf, q) for q in QUESTIONS]
    targets = (1, 3)

    def answer(deltas: list) -> tuple[list[int], list[float]]:
        return tokens(deltas), [lp.logprob for d in deltas for lp in d.logprobs]

    alone = {
        i: answer(next(iter(run(make_engine(gguf, 8), [GenerationRequest(prompts[i], params)]).values())))
        for i in targets
    }
    engine = make_engine(gguf, 8)
    for k, n in enumerate([2, 9, 4, 30, 6, 3, 40]):  # some finish within a few steps, some run on
        engine.add(
            GenerationRequest(prompts[(k + 1) % 8], SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True))
        )
    got: dict[str, list] = defaultdict(list)

    def step(times: int) -> None:
        for _ in range(times):
            for rid, d in engine.step():
                got[rid].append(d)

    step(12)
    assert engine.stats.finished >= 4 and engine.num_running >= 2  # holes left behind, neighbours still busy
    late = {i: GenerationRequest(prompts[i], params) for i in targets}
    for r in late.values():
        engine.add(r)
        step(3)
    while engine.has_work:
        step(1)
    for i, r in late.items():
        assert answer(got[r.request_id]) == alone[i], QUESTIONS[i]


def test_a_lone_long_row_decodes_as_it_does_next_to_others(gguf: LoadedGGUF) -> None:
    """Alone, one query over more than 256 cells would take ggml's split-KV kernel (other rounding
    once two threads share it); the runner gives it company so its logits equal those in a batch."""
    import llama_cpp

    rng = random.Random(1)
    ids = [rng.randrange(1000, 2000) for _ in range(300)]
    runner = LlamaCppRunner(gguf.model, n_ctx_seq=512, max_num_seqs=2, max_batch_tokens=320, threads=1, park_slots=0)
    runner.forward(0, [ids], [0])
    runner.forward(1, [ids[:20]], [0])
    llama_cpp.llama_set_n_threads(runner.ctx, 2, 2)  # the split-KV kernel splits the cells between threads
    together = runner.forward(0, [[7], [8]], [300, 20])[0]
    alone = runner.forward(0, [[7]], [300])[0]
    assert alone.equal(together)
    assert runner.cache.lens == [stored(runner, 0), stored(runner, 1)] == [301, 21]  # no extra cell left
    runner.close()


def test_a_prompt_longer_than_a_stream_is_refused_and_the_others_go_on(gguf: LoadedGGUF) -> None:
    engine = make_engine(gguf, 4, n_ctx_seq=256)
    assert engine.max_model_len == 256
    filler = llama_tokenize(gguf, " hello" * 300, special=False)
    ok = GenerationRequest(chat(gguf, QUESTIONS[0]), SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True))
    too_long = GenerationRequest(filler[:256], GREEDY)
    just_fits = GenerationRequest(filler[:255], GREEDY)  # room for exactly one token
    out = run(engine, [ok, too_long, just_fits])
    refused = out[too_long.request_id]
    assert len(refused) == 1 and refused[0].finish_reason is FinishReason.ERROR and "256" in refused[0].error
    assert len(tokens(out[ok.request_id])) == 8
    assert len(tokens(out[just_fits.request_id])) == 1
    assert out[just_fits.request_id][-1].finish_reason is FinishReason.LENGTH
    with pytest.raises(ValueError, match="stream"):  # the runner itself refuses before llama.cpp sees it
        engine.runner.forward(0, [filler[:257]], [0])


def test_cells_per_sequence() -> None:
    plenty = 10**9
    assert cells_per_sequence(20, 2048, None, plenty) == 2048
    assert cells_per_sequence(20, 2048, None, 20 * 1000) == 768  # the reservation must fit memory once: in 256s
    assert cells_per_sequence(20, 2048, None, 100) == 512  # never below 512
    assert cells_per_sequence(20, 2048, 20 * 1000, plenty) == 2048  # --cache-tokens is a ceiling, not a share
    assert cells_per_sequence(20, 2048, 1000, plenty) == 1000  # no sequence holds more than the whole budget
    # where every cell stays resident, the budget is split among the streams
    assert even_share(20, 8192, 20 * 1000) == 768
    assert even_share(4, 1000, 10**6) == 1000  # never past the longest allowed
    with pytest.raises(ValueError, match="cache_tokens=4096"):
        even_share(68, 8192, 4096)


def test_factory_sizes_one_stream_per_sequence_and_a_budget_for_what_they_hold() -> None:
    built, loaded = _llamacpp_engine(Settings(max_num_seqs=2, max_model_len=1000, cache_tokens=1500))
    runner = built.runner
    assert loaded.max_model_len == built.max_model_len == 1000  # what the user asked; the stream rounds up to 1024
    assert runner.n_ctx_seq == 1024 and runner.prefixes is not None
    assert len(runner.prefixes._free_ids) == 4  # no more parked chats than rows, 4 at least
    assert runner.pages_released
    # the rows share the budget (the sum of their tokens), parked prefixes take a quarter at most
    assert runner.prefixes.max_tokens == 1500 // 4
    assert built.scheduler.cache_tokens == 1500 - 1500 // 4 and not built.scheduler.padded
    runner.close()


def test_greedy_alone_equals_greedy_in_a_mixed_batch(gguf: LoadedGGUF) -> None:
    """Greedy rows next to sampled ones, prefilled and decoded together, answer as they do alone."""
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


def test_long_prompts_prefilled_in_other_chunks_answer_as_alone(gguf: LoadedGGUF) -> None:
    """Prompts over 63 tokens, cut into other chunks next to each other than alone: the same answers,
    log-probabilities included (no row feeds 64 queries at once, so no tiled attention kernel)."""
    story = "Once upon a time there was a small village by the sea where fishermen told stories every night. " * 6
    prompts = [chat(gguf, story + q) for q in ("Who told stories?", "Where was the village?", "Summarize.")]
    assert all(len(p) > 2 * 63 for p in prompts)
    params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True, logprobs=True)

    def answer(deltas: list) -> tuple[list[int], list[float]]:
        return tokens(deltas), [lp.logprob for d in deltas for lp in d.logprobs]

    alone = [answer(next(iter(run(make_engine(gguf, 4), [GenerationRequest(p, params)]).values()))) for p in prompts]
    reqs = [GenerationRequest(p, params) for p in prompts]
    out = run(make_engine(gguf, 4, prefill_chunk=100), reqs)
    assert [answer(out[r.request_id]) for r in reqs] == alone


def test_rows_preempted_at_the_budget_answer_as_alone(gguf: LoadedGGUF) -> None:
    """The budget is a ceiling on the tokens the rows hold: growing rows past it preempts the newest,
    which is prefilled again later (its answer so far included) and still answers as it does alone."""
    params = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True, logprobs=True)
    prompts = [chat(gguf, q) for q in QUESTIONS[:6]]

    def answer(deltas: list) -> tuple[list[int], list[float]]:
        return tokens(deltas), [lp.logprob for d in deltas for lp in d.logprobs]

    alone = [answer(next(iter(run(make_engine(gguf, 4), [GenerationRequest(p, params)]).values()))) for p in prompts]
    engine = make_engine(gguf, 8, cache_tokens=3 * (max(map(len, prompts)) + 20))
    reqs = [GenerationRequest(p, params) for p in prompts]
    out = run(engine, reqs)
    assert engine.stats.preempted > 0
    assert [answer(out[r.request_id]) for r in reqs] == alone


def test_abort_frees_the_row_and_the_others_continue(gguf: LoadedGGUF) -> None:
    steps_before_abort = 5
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
    n_rows = engine.runner.cache.n_rows
    assert [stored(engine.runner, row) for row in range(n_rows)] == [0] * n_rows, "finished rows keep no cells"
    for i in (0, 2):  # the last row moved into the aborted one's row: still its own answer
        assert tokens(got[reqs[i].request_id]) == alone[i]


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
    """The first turn's prompt is long enough (64+ tokens) to be prefilled by the tiled kernel, as the
    second turn's is: its cells are reused, all but the last 64 positions of the new prompt at most."""
    question = "I am planning a trip through Europe next spring and keep a list of capitals. " * 3
    question += "What is the capital of France?"
    first = chat(gguf, question)
    assert len(first) >= TILED_FROM
    with_logprobs = SamplingParams(max_tokens=16, temperature=0.0, logprobs=True)
    answers, stats = [], []
    for reuse in (False, True):
        engine = make_engine(gguf, prefix_reuse=reuse)
        turn1 = tokens(next(iter(run(engine, [GenerationRequest(first, GREEDY)]).values())))
        reply = gguf.tokenizer.decode(turn1, skip_special_tokens=True)
        second = chat(gguf, question, reply, "And of Italy?")
        before = engine.stats.prefilled_tokens
        deltas = next(iter(run(engine, [GenerationRequest(second, with_logprobs)]).values()))
        answers.append((tokens(deltas), [lp.logprob for d in deltas for lp in d.logprobs]))
        stats.append((engine.stats.prefilled_tokens - before, engine.stats.reused_tokens, len(second)))
    assert answers[0] == answers[1]  # the parked cells hold what a fresh prefill computes, bit for bit
    (plain_prefill, _, n), (reuse_prefill, reused, _) = stats
    assert plain_prefill == n
    assert reused >= min(len(first), n - TILED_FROM)  # the first prompt came from the parked turn
    assert reuse_prefill == n - reused


def test_free_rows_answer_the_same_beside_rows_under_a_grammar(gguf: LoadedGGUF) -> None:
    """Constrained rows share the batch; the free greedy rows answer exactly as alone, and every
    constrained answer is the JSON its schema asks for, ended as soon as it is complete."""
    import json

    from streamchat.engine.grammar import specs
    from streamchat.engine.grammar.compiler import GrammarCompiler

    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "maxLength": 24}, "sure": {"type": "boolean"}},
        "required": ["answer", "sure"],
    }
    compiler = GrammarCompiler(gguf.tokenizer, gguf.eos_token_ids)
    fixed = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    prompts = [chat(gguf, q) for q in QUESTIONS[:6]]
    alone = [tokens(next(iter(run(make_engine(gguf), [GenerationRequest(p, fixed)]).values()))) for p in prompts]
    free = [GenerationRequest(p, fixed) for p in prompts]
    shaped = [
        GenerationRequest(p, SamplingParams(max_tokens=200, temperature=t, seed=3), constraint=compiler.compile(
            specs.json_schema(schema), "schema"))
        for p, t in zip(prompts, [0.0, 0.7] * 3, strict=True)
    ]  # fmt: skip
    out = run(make_engine(gguf), [r for pair in zip(free, shaped, strict=True) for r in pair])
    assert [tokens(out[r.request_id]) for r in free] == alone
    for r in shaped:
        deltas = out[r.request_id]
        assert deltas[-1].finish_reason is FinishReason.STOP
        assert set(json.loads(text(deltas))) == {"answer", "sure"}


def test_a_round_of_eight_chats_finds_every_first_turn_parked_for_its_second(gguf: LoadedGGUF) -> None:
    """Eight chats answered together, then their next turns together: each second turn reuses its
    whole first prompt. Regression: with 4 parking slots, evicted least recently used first, half
    of the chats found only the system prompt the chats share and prefilled their turn again; and
    with no token ceiling (`park_tokens=None`, where llama.cpp's cells cannot be handed back)
    parking one chat evicted every other. Both turns stay under 64 tokens, so both are computed by
    the same kernel and the whole first turn may be reused (prefill.py)."""
    assert len(QUESTIONS) == 8
    short = SamplingParams(max_tokens=4, temperature=0.0)
    engine = make_engine(gguf, prefix_reuse=True)
    firsts = [chat(gguf, q) for q in QUESTIONS]
    answers = run(engine, [GenerationRequest(p, short, request_id=f"c{i}") for i, p in enumerate(firsts)])
    replies = [gguf.tokenizer.decode(tokens(answers[f"c{i}"]), skip_special_tokens=True) for i in range(8)]
    seconds = [chat(gguf, q, r, "Again.") for q, r in zip(QUESTIONS, replies, strict=True)]
    assert max(len(p) for p in seconds) < TILED_FROM
    before = engine.stats.reused_tokens
    run(engine, [GenerationRequest(p, short) for p in seconds])
    assert engine.stats.reused_tokens - before >= sum(len(p) for p in firsts)
