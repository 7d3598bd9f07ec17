"""`engine/scheduler.py` alone, over a cache that only records which sequence each row holds."""

from __future__ import annotations

from streamchat.engine.answer_text import AnswerText
from streamchat.engine.scheduler import Scheduler
from streamchat.engine.sequence import SeqStatus, Sequence
from streamchat.engine.types import GenerationRequest


class RecordingCache:
    """A `RowCache` whose rows hold labels, so every move the scheduler mirrors can be checked."""

    def __init__(self) -> None:
        self.rows: dict[int, str] = {}
        self.released = 0

    def move_row(self, src: int, dst: int) -> None:
        self.rows[dst] = self.rows.pop(src)

    def swap_rows(self, a: int, b: int) -> None:
        self.rows[a], self.rows[b] = self.rows.get(b), self.rows.get(a)

    def release(self) -> None:
        self.rows.clear()
        self.released += 1


class NoDecoder:
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return ""


def seq(name: str, prompt_len: int, arrival: int) -> Sequence:
    request = GenerationRequest(list(range(prompt_len)), request_id=name)
    return Sequence(request, AnswerText(NoDecoder(), [], ()), None, arrival=arrival)


def run_prefill(sched: Scheduler, cache: RecordingCache) -> None:
    """What the engine does after a prefill: the rows now hold their sequences, which start decoding."""
    for s in sched.prefilling:
        cache.rows[s.row] = s.id
        s.num_cached = s.num_tokens
    sched.promote(list(sched.prefilling))


def check_consistent(sched: Scheduler, cache: RecordingCache) -> None:
    assert [s.row for s in sched.rows] == list(range(len(sched.rows)))
    assert [cache.rows.get(r) for r in range(len(sched.rows))] == [s.id for s in sched.rows]  # rows past them are free
    assert all(s.status is SeqStatus.DECODING for s in sched.decoding)


def test_admits_up_to_max_num_seqs_in_arrival_order() -> None:
    cache = RecordingCache()
    sched = Scheduler(cache, max_num_seqs=2, cache_tokens=10_000)
    sched.waiting.extend(seq(n, 10, i) for i, n in enumerate("abc"))
    sched.admit()
    assert [s.id for s in sched.rows] == ["a", "b"] and [s.id for s in sched.waiting] == ["c"]
    assert all(s.status is SeqStatus.PREFILLING for s in sched.rows)


def test_admission_stops_at_the_token_budget_but_never_starves_an_empty_batch() -> None:
    cache = RecordingCache()
    sched = Scheduler(cache, max_num_seqs=8, cache_tokens=100)
    sched.waiting.extend([seq("a", 40, 0), seq("b", 40, 1), seq("c", 500, 2)])
    sched.admit()
    assert [s.id for s in sched.rows] == ["a", "b"]  # 2 rows x 41 fit; 3 x 41 would not
    run_prefill(sched, cache)
    for s in list(sched.rows):
        sched.remove(s)
    assert cache.released == 1  # the last row freed: the cache is handed back
    sched.admit()
    assert [s.id for s in sched.rows] == ["c"]  # alone it runs even past the budget


def test_remove_keeps_both_blocks_contiguous_and_the_cache_in_step() -> None:
    cache = RecordingCache()
    sched = Scheduler(cache, max_num_seqs=8, cache_tokens=10_000)
    sched.waiting.extend(seq(n, 5, i) for i, n in enumerate("abcd"))
    sched.admit()
    run_prefill(sched, cache)
    sched.waiting.extend([seq("e", 5, 4), seq("f", 5, 5)])
    sched.admit()  # e and f prefilling after the decoding block
    for s in sched.prefilling:
        cache.rows[s.row] = s.id
    sched.remove(sched.rows[1])  # b, from the middle of the decoding block
    check_consistent(sched, cache)
    assert [s.id for s in sched.decoding] == ["a", "d", "c"]
    assert [s.id for s in sched.prefilling] == ["f", "e"]


def test_preemption_takes_the_newest_sequence_not_the_last_row() -> None:
    """Regression: the victim was the last decoding row, which `remove()` reorders, so an old
    sequence that had done much work could be preempted while a newer one kept its row."""
    cache = RecordingCache()
    sched = Scheduler(cache, max_num_seqs=8, cache_tokens=10_000)
    a, b, c = seq("a", 10, 0), seq("b", 10, 1), seq("c", 10, 2)
    sched.waiting.extend([a, b, c])
    sched.admit()
    run_prefill(sched, cache)
    sched.remove(a)  # c moves into row 0: rows are now [c, b]
    assert [s.id for s in sched.decoding] == ["c", "b"]
    sched.cache_tokens = 2 * b.num_tokens  # one more token per row no longer fits
    preempted = sched.make_room_for_decode()
    assert [s.id for s in preempted] == ["c"]  # the newest, though it sits in row 0
    assert c.status is SeqStatus.WAITING and c.num_cached == 0 and sched.waiting[0] is c
    check_consistent(sched, cache)


def test_preemption_frees_rows_newest_first_until_a_step_fits_and_keeps_one() -> None:
    cache = RecordingCache()
    sched = Scheduler(cache, max_num_seqs=8, cache_tokens=10_000)
    seqs = [seq(n, 10, i) for i, n in enumerate("abcd")]
    sched.waiting.extend(seqs)
    sched.admit()
    run_prefill(sched, cache)
    sched.cache_tokens = 2 * 11  # room for two rows of 11
    assert [s.id for s in sched.make_room_for_decode()] == ["d", "c"]
    assert [s.id for s in sched.waiting] == ["c", "d"]  # the older goes back first
    sched.cache_tokens = 1
    assert [s.id for s in sched.make_room_for_decode()] == ["b"]  # the last one always keeps running
    assert [s.id for s in sched.decoding] == ["a"]
    check_consistent(sched, cache)


def test_a_cache_that_costs_the_tokens_held_admits_by_their_sum() -> None:
    """llama.cpp's streams cost what each row holds, not rows × the longest: a long row does not
    keep short ones out, and the budget still preempts when the sum would pass it."""
    cache = RecordingCache()
    sched = Scheduler(cache, max_num_seqs=8, cache_tokens=280, padded=False)
    sched.waiting.extend([seq("long", 199, 0), seq("a", 29, 1), seq("b", 29, 2), seq("c", 29, 3)])
    sched.admit()
    assert [s.id for s in sched.rows] == ["long", "a", "b"]  # 200 + 30 + 30 fit, a fourth 30 would not
    run_prefill(sched, cache)
    for s in sched.decoding:
        s.output_ids += [7] * 15  # 214 + 44 + 44 tokens: one more each makes 305 > 280
    assert [s.id for s in sched.make_room_for_decode()] == ["b"]
    check_consistent(sched, cache)
