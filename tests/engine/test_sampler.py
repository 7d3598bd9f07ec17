"""`engine/sampler.py`: per-row greedy, filters, seeds, penalties, bans and logprobs in one batched step."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

import pytest
import torch

from streamchat.engine.sampler import RowState, Sampled, reseed, sample
from streamchat.engine.types import SamplingParams

# A fixed distribution over 8 tokens, highest first, so every filter has a known keep-set.
PROBS = [0.4, 0.25, 0.15, 0.1, 0.04, 0.03, 0.02, 0.01]
LOGITS = torch.tensor(PROBS).log()
DRAWS = 200


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from intra-op threads, and on a busy machine the hand-offs take seconds."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def row(
    params: SamplingParams | None = None,
    prompt_ids: list[int] | None = None,
    output_ids: list[int] | None = None,
    banned_ids: tuple[int, ...] = (),
) -> RowState:
    """A row as the engine builds it: its own generator exactly when the request has a seed."""
    params = params or SamplingParams()
    generator = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
    return RowState(params, list(prompt_ids or []), list(output_ids or []), generator, banned_ids)


def shared(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch_of(*rows_logits: torch.Tensor) -> torch.Tensor:
    return torch.stack(list(rows_logits)).float()


def draw_counts(rows: list[RowState], logits: torch.Tensor, draws: int = DRAWS, seed: int = 0) -> list[Counter[int]]:
    """How often each token was picked, per row, over repeated steps on the same logits."""
    rng = shared(seed)
    counts: list[Counter[int]] = [Counter() for _ in rows]
    for _ in range(draws):
        for count, picked in zip(counts, sample(logits, rows, rng), strict=True):
            count[picked.token_id] += 1
    return counts


def test_greedy_row_takes_the_argmax_while_its_neighbours_sample() -> None:
    """A temperature-0 row must never be perturbed by the noise drawn for the rows around it."""
    flat = torch.zeros(8)
    flat[5] = 0.01  # the argmax, though sampling would pick it barely one time in eight
    logits = batch_of(LOGITS, flat, LOGITS)
    rows = [row(), row(SamplingParams(temperature=0.0)), row(SamplingParams(seed=3))]
    neighbours, greedy, seeded = draw_counts(rows, logits)
    assert greedy == Counter({5: DRAWS})
    assert len(neighbours) > 3 and len(seeded) > 3


@pytest.mark.parametrize(
    ("params", "allowed"),
    [
        (SamplingParams(top_k=3), {0, 1, 2}),
        (SamplingParams(top_p=0.6), {0, 1}),
        (SamplingParams(min_p=0.3), {0, 1, 2}),
        (SamplingParams(top_k=4, min_p=0.3), {0, 1, 2}),
        (SamplingParams(temperature=10.0, top_p=0.6), {0, 1, 2, 3, 4}),
        (SamplingParams(temperature=0.02), {0}),
    ],
    ids=["top_k", "top_p", "min_p", "top_k+min_p", "temperature-before-top_p", "cold"],
)
@pytest.mark.parametrize("seeded", [False, True], ids=["shared-rng", "own-generator"])
def test_filters_never_pick_a_filtered_token(params: SamplingParams, allowed: set[int], seeded: bool) -> None:
    """Each row keeps exactly its own keep-set, even beside an unfiltered row that roams the vocabulary."""
    if seeded:
        params = replace(params, seed=11)
    logits = batch_of(LOGITS, LOGITS)
    filtered, unfiltered = draw_counts([row(params), row()], logits)
    assert set(filtered) == allowed
    assert len(unfiltered) >= 6


def _seeded_run(neighbours: list[tuple[RowState, torch.Tensor]], position: int, rng_seed: int) -> list[int]:
    """The draws of a row seeded with 1234 over 40 steps, placed at `position` among `neighbours`."""
    own_logits = torch.randn(32, generator=torch.Generator().manual_seed(5))
    seeded = row(SamplingParams(seed=1234, temperature=0.9))
    rows = [r for r, _ in neighbours]
    logits = [lg for _, lg in neighbours]
    rows.insert(position, seeded)
    logits.insert(position, own_logits)
    batch = batch_of(*logits)
    rng = shared(rng_seed)
    return [sample(batch, rows, rng)[position].token_id for _ in range(40)]


def test_a_seeded_row_draws_the_same_whatever_shares_the_batch() -> None:
    """A seed promises a reproducible answer, so batch neighbours and the shared RNG must not matter."""
    noise = torch.Generator().manual_seed(9)
    other = [torch.randn(32, generator=noise) for _ in range(3)]
    alone = _seeded_run([], 0, rng_seed=0)
    crowded = _seeded_run(
        [(row(), other[0]), (row(SamplingParams(temperature=0.0)), other[1]), (row(SamplingParams(top_k=5)), other[2])],
        position=1,
        rng_seed=77,
    )
    among_seeded = _seeded_run(
        [(row(SamplingParams(seed=99, top_p=0.5)), other[0]), (row(SamplingParams(min_p=0.1)), other[1])],
        position=2,
        rng_seed=5,
    )
    assert len(set(alone)) > 5
    assert crowded == alone
    assert among_seeded == alone


def test_a_reseeded_row_draws_by_seed_and_position_only() -> None:
    """What a seeded row draws at a position must not depend on how it got there (the draws before
    it, in a process that has since died): reseeding from (seed, position) gives the same pick."""
    batch = batch_of(torch.randn(32, generator=torch.Generator().manual_seed(5)))

    def pick(seed: int, position: int, draws_before: int) -> int:
        r = row(SamplingParams(seed=seed, temperature=0.9))
        for _ in range(draws_before):  # a history of other draws
            sample(batch, [r], shared())
        reseed(r.generator, seed, position)
        return sample(batch, [r], shared())[0].token_id

    picks = [pick(1234, position, 0) for position in range(40)]
    assert [pick(1234, position, 3) for position in range(40)] == picks
    assert len(set(picks)) > 5, "positions draw independently"
    assert [pick(99, position, 0) for position in range(40)] != picks


def test_seeded_and_greedy_rows_leave_the_shared_rng_untouched() -> None:
    """Only unseeded sampled rows may consume the shared RNG; otherwise other requests' draws would shift."""
    logits = batch_of(LOGITS, LOGITS)
    rng = shared(42)
    before = rng.get_state()
    for _ in range(10):
        sample(logits, [row(SamplingParams(seed=1)), row(SamplingParams(temperature=0.0))], rng)
    assert torch.equal(rng.get_state(), before)

    sample(logits, [row(SamplingParams(seed=1)), row()], rng)
    assert not torch.equal(rng.get_state(), before)


def test_unseeded_rows_are_reproducible_from_the_shared_rng() -> None:
    """The engine seeds its shared RNG once; the same seed must replay the same unseeded draws."""
    logits = batch_of(LOGITS, LOGITS)
    runs = [
        [tuple(s.token_id for s in sample(logits, [row(), row()], rng)) for _ in range(30)]
        for rng in (shared(3), shared(3))
    ]
    assert runs[0] == runs[1]
    assert len(set(runs[0])) > 3


def _greedy_pick(logits: list[float], params: SamplingParams, prompt_ids: list[int], output_ids: list[int]) -> int:
    params = replace(params, temperature=0.0)
    return sample(batch_of(torch.tensor(logits)), [row(params, prompt_ids, output_ids)], shared())[0].token_id


@pytest.mark.parametrize(
    ("logits", "prompt_ids", "output_ids", "expected"),
    [
        ([3.0, 1.4, 0.0], [0], [], 0),  # 3.0 / 2 = 1.5 still beats 1.4
        ([3.0, 1.6, 0.0], [0], [], 1),  # 1.5 loses to 1.6
        ([3.0, 1.6, 0.0], [], [0], 1),  # output ids count as seen too
        ([3.0, 1.4, 0.0], [0, 0], [0, 0, 0], 0),  # divided once however often it was seen
        ([-1.0, -1.9, -5.0], [0], [], 1),  # negative logits are multiplied: -2.0 falls below -1.9
        ([-1.0, -2.1, -5.0], [0], [], 0),  # -2.0 still beats -2.1
        ([3.0, 1.6, 0.0], [0, 1], [], 0),  # the runner-up, seen as well, falls to 0.8
    ],
)
def test_repetition_penalty_divides_positive_and_multiplies_negative_logits(
    logits: list[float], prompt_ids: list[int], output_ids: list[int], expected: int
) -> None:
    """HF semantics: a seen token always becomes less likely, whichever side of zero its logit is."""
    vocab = logits + [-9.0] * 7
    assert _greedy_pick(vocab, SamplingParams(repetition_penalty=2.0), prompt_ids, output_ids) == expected


@pytest.mark.parametrize(
    ("params", "prompt_ids", "output_ids", "expected"),
    [
        (SamplingParams(frequency_penalty=0.4), [], [0, 0], 0),  # 3.0 - 0.8 = 2.2 > 2.0
        (SamplingParams(frequency_penalty=0.6), [], [0, 0], 1),  # 3.0 - 1.2 = 1.8 < 2.0
        (SamplingParams(presence_penalty=0.9), [], [0, 0, 0], 0),  # once, not per count: 2.1
        (SamplingParams(presence_penalty=1.1), [], [0], 1),  # 1.9
        (SamplingParams(presence_penalty=0.5, frequency_penalty=0.3), [], [0, 0], 1),  # 3 - 0.6 - 0.5 = 1.9
        (SamplingParams(presence_penalty=0.5, frequency_penalty=0.2), [], [0, 0], 0),  # 3 - 0.4 - 0.5 = 2.1
        (SamplingParams(presence_penalty=5.0, frequency_penalty=5.0), [0, 0, 0], [], 0),  # prompt ids don't count
        (SamplingParams(frequency_penalty=0.5), [0, 0, 0], [2], 0),  # nor alongside output ids
        (SamplingParams(presence_penalty=1.1), [], [0, 1], 0),  # the runner-up, present as well, falls to 0.9
    ],
)
def test_presence_and_frequency_penalties_follow_openai_over_output_ids(
    params: SamplingParams, prompt_ids: list[int], output_ids: list[int], expected: int
) -> None:
    """OpenAI semantics: logit -= count * frequency + (count > 0) * presence, counting generated tokens only."""
    assert _greedy_pick([3.0, 2.0, 0.0, -1.0], params, prompt_ids, output_ids) == expected


def test_penalties_apply_only_to_the_rows_that_ask_for_them() -> None:
    """Penalties are per request; the same logits in an unpenalised row must keep their argmax."""
    logits = batch_of(torch.tensor([3.0, 2.0, 0.0]), torch.tensor([3.0, 2.0, 0.0]))
    greedy = SamplingParams(temperature=0.0)
    penalised = SamplingParams(temperature=0.0, presence_penalty=2.0, repetition_penalty=1.5)
    picks = sample(logits, [row(penalised, [0], [0]), row(greedy, [0], [0])], shared())
    assert [p.token_id for p in picks] == [1, 0]


def test_banned_ids_are_never_drawn() -> None:
    """EOS is banned until min_tokens is reached; neither greedy nor sampled rows may emit it."""
    logits = batch_of(LOGITS, LOGITS, LOGITS)
    rows = [
        row(SamplingParams(temperature=0.0), banned_ids=(0,)),
        row(banned_ids=(0, 1, 3)),
        row(SamplingParams(seed=4, temperature=5.0), banned_ids=(2, 7)),
    ]
    greedy, shared_rng_row, seeded = draw_counts(rows, logits)
    assert greedy == Counter({1: DRAWS})
    assert set(shared_rng_row) == {2, 4, 5, 6, 7}
    assert set(seeded) == {0, 1, 3, 4, 5, 6}


def test_logprobs_come_from_the_raw_logits_not_the_penalised_ones() -> None:
    """Logprobs describe the model's distribution, so penalties that flip the pick must not change them."""
    raw = torch.tensor([3.0, 2.5, 1.0, -2.0, 0.5, 2.9])
    expected = torch.log_softmax(raw, dim=-1)
    params = SamplingParams(temperature=0.0, repetition_penalty=4.0, logprobs=True, top_logprobs=3)
    picked = sample(batch_of(raw), [row(params, [0, 5], [])], shared())[0]
    assert picked.token_id == 1
    assert picked.logprob == pytest.approx(expected[1].item())
    assert [tok for tok, _ in picked.top] == [0, 5, 1]
    assert [lp for _, lp in picked.top] == pytest.approx([expected[i].item() for i in (0, 5, 1)])


def test_logprob_of_a_sampled_token_matches_its_probability() -> None:
    """For a sampled row the logprob is that of the token actually drawn, not of the argmax."""
    params = SamplingParams(seed=8, logprobs=True, top_logprobs=2)
    rng = shared()
    for _ in range(50):
        picked = sample(batch_of(LOGITS), [row(params)], rng)[0]
        assert picked.logprob == pytest.approx(math.log(PROBS[picked.token_id]), rel=1e-5)
        assert [tok for tok, _ in picked.top] == [0, 1]


def test_rows_without_logprobs_get_none_beside_rows_that_want_them() -> None:
    """Asking for logprobs is per request; a neighbour's request must not leak them into other answers."""
    logits = batch_of(LOGITS, LOGITS, LOGITS)
    rows = [
        row(SamplingParams(temperature=0.0, logprobs=True, top_logprobs=4)),
        row(SamplingParams(temperature=0.0)),
        row(SamplingParams(temperature=0.0, logprobs=True)),
    ]
    with_top, without, no_top = sample(logits, rows, shared())
    assert with_top.logprob == pytest.approx(math.log(PROBS[0]))
    assert [tok for tok, _ in with_top.top] == [0, 1, 2, 3]
    assert without == Sampled(0, None, ())
    assert no_top.logprob == pytest.approx(math.log(PROBS[0])) and no_top.top == ()


def test_no_row_asking_for_logprobs_returns_plain_tokens() -> None:
    picks = sample(batch_of(LOGITS, LOGITS), [row(SamplingParams(temperature=0.0)), row()], shared())
    assert all(p.logprob is None and p.top == () for p in picks)
    assert picks[0].token_id == 0


def test_draws_follow_the_probabilities() -> None:
    """One uniform number per row through the cumulative sums draws each token with its probability:
    40,000 rows of the 8-token distribution land within 4 standard deviations of each share."""
    n = 40_000
    picks = sample(LOGITS.repeat(n, 1), [row(SamplingParams(temperature=1.0))] * n, shared(3))
    counts = Counter(p.token_id for p in picks)
    for token, p in enumerate(PROBS):
        assert abs(counts[token] - n * p) < 4 * math.sqrt(n * p * (1 - p)), (token, counts[token], n * p)


def test_zero_probability_tokens_are_never_drawn_even_at_the_ends_of_the_vocabulary() -> None:
    logits = torch.full((49_152,), float("-inf"))
    logits[[1, 30_000]] = 0.0  # token 0 and the last token have no probability
    picks = draw_counts([row(SamplingParams(temperature=1.0))], logits.unsqueeze(0), draws=400)[0]
    assert set(picks) == {1, 30_000}


def test_greedy_picks_the_first_of_tied_largest_logits() -> None:
    logits = torch.zeros(2, 49_152)
    logits[0, [7, 9, 40_000]] = 5.0
    logits[1, -1] = 1.0
    greedy = row(SamplingParams(temperature=0.0))
    assert [p.token_id for p in sample(logits, [greedy, greedy], shared())] == [7, 49_151]


@pytest.mark.parametrize("scale", [0.5, 3.0, 8.0])
def test_top_k_top_p_among_the_largest_logits_equals_the_whole_sort(scale: float) -> None:
    """The fast filter keeps what sorting the whole vocabulary keeps, also for flat rows whose
    nucleus reaches past the candidates (sorted in full then) and for a top_k larger than the
    candidates. The two sum probabilities in different orders, so a token whose running sum sits
    at top_p to within rounding may be in one set and not the other; nothing else may differ."""
    from streamchat.engine.sampler import _sorted_top_k_top_p, _top_k_top_p

    gen = torch.Generator().manual_seed(int(scale * 10))
    params = [
        SamplingParams(temperature=1.0, top_p=0.9),
        SamplingParams(temperature=1.0, top_p=0.7, top_k=40),
        SamplingParams(temperature=1.0, top_k=300),
        SamplingParams(temperature=1.0, top_k=300, top_p=0.5),
        SamplingParams(temperature=1.0, top_p=0.999),
    ]
    for _ in range(20):
        logits = torch.randn(len(params), 49_152, generator=gen) * scale
        fast, whole = _top_k_top_p(logits, params), _sorted_top_k_top_p(logits, params)
        kept_fast, kept_whole = torch.isfinite(fast), torch.isfinite(whole)
        assert torch.equal(fast[kept_fast & kept_whole], logits[kept_fast & kept_whole])
        for r, p in enumerate(params):
            differ = (kept_fast[r] != kept_whole[r]).nonzero().flatten().tolist()
            assert len(differ) <= 1
            if differ:  # the last token of one nucleus: the mass before it is top_p, to rounding
                probs = torch.softmax(logits[r].double(), dim=-1)
                before = probs[probs > probs[differ[0]]].sum().item()
                assert abs(before - p.top_p) < 1e-5, (r, before, p.top_p)


def test_top_p_one_with_a_top_k_keeps_all_of_the_top_k() -> None:
    """top_p 1.0 cuts nothing, even where the running sum reaches 1.0 early by rounding."""
    logits = torch.cat([torch.tensor([30.0]), torch.zeros(49_151)]).unsqueeze(0)
    from streamchat.engine.sampler import _top_k_top_p

    kept = torch.isfinite(_top_k_top_p(logits, [SamplingParams(temperature=1.0, top_k=300)]))
    assert int(kept.sum()) == 300


def test_a_top_k_past_the_candidates_normalises_over_its_own_set() -> None:
    """top_k 300 with top_p 0.5: token 0 holds 49150 / (49150 + 10922 + 298) of the top-300 set,
    over half, so the nucleus is token 0 alone (over the whole vocabulary it would hold under half)."""
    from streamchat.engine.sampler import _top_k_top_p

    logits = torch.zeros(1, 49_152)
    logits[0, 0], logits[0, 1] = math.log(49_150), math.log(10_922)
    kept = torch.isfinite(_top_k_top_p(logits, [SamplingParams(temperature=1.0, top_k=300, top_p=0.5)]))
    assert kept[0].nonzero().flatten().tolist() == [0]


@pytest.mark.parametrize("fill", [float("-inf"), float("nan")])
def test_a_row_with_nothing_to_draw_from_keeps_a_token_of_the_vocabulary(fill: float) -> None:
    """Every logit -inf (a grammar that allows nothing) or NaN: the draw cannot pick an id past the
    vocabulary, and its neighbour still samples."""
    vocab = 1_000  # not a multiple of the 256-token blocks
    logits = torch.zeros(2, vocab)
    logits[0] = fill
    picks = sample(logits, [row(SamplingParams(temperature=1.0)), row(SamplingParams(temperature=1.0))], shared())
    assert all(0 <= p.token_id < vocab for p in picks)
