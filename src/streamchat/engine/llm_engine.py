"""The synchronous engine: one `step()` admits, prefills, decodes, samples and detokenizes.

It runs on the engine's own thread (see `async_engine.py`) and knows nothing of HTTP. Each step:

    admit waiting → one prefill forward (chunked) → one decode forward for every running row
    → sample each row with its own parameters → detokenize → finish or continue

Prefill and decode are separate forwards because on a CPU a decode row padded to a prefill
chunk's length would cost that whole chunk.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace

import torch

from streamchat.engine.answer_text import AnswerText
from streamchat.engine.contracts import PrefillPlan, PrefillRow, PrefixStore, Runner, Tokenizer
from streamchat.engine.grammar.masks import MaskWorker
from streamchat.engine.sampler import Masks, RowState, Sampled, reseed, sample
from streamchat.engine.scheduler import Scheduler
from streamchat.engine.seen_tokens import SeenTokens
from streamchat.engine.sequence import SeqStatus, Sequence
from streamchat.engine.speculation import Drafts, PromptLookup
from streamchat.engine.token_bytes import TokenBytes
from streamchat.engine.types import Delta, FinishReason, GenerationRequest, TokenLogprob, Usage
from streamchat.engine.utf8_guard import START, Utf8Guard

log = logging.getLogger(__name__)


@dataclass
class EngineStats:
    """What the engine has done so far; published as a copy (`snapshot()`), never shared live."""

    finished: int = 0
    aborted: int = 0
    preempted: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefilled_tokens: int = 0  # tokens actually fed to prefill forwards
    reused_tokens: int = 0  # prompt tokens whose keys/values came from a finished sequence
    steps: int = 0
    draft_tokens: int = 0  # tokens proposed by prompt lookup (speculation.py)
    accepted_tokens: int = 0  # of those, the ones decoding would have picked: kept
    guessed_tokens: int = 0  # free one-token guesses in the slot of a throwaway query (speculation.py)
    guessed_kept: int = 0


class LLMEngine:
    def __init__(
        self,
        runner: Runner,
        tokenizer: Tokenizer,
        eos_token_ids: set[int],
        max_model_len: int,
        max_num_seqs: int,
        cache_tokens: int,
        prefill_chunk: int = 512,
        seed: int = 0,
        padded_cache: bool = True,
        speculation: PromptLookup | None = None,
    ) -> None:
        self.runner = runner
        self.tokenizer = tokenizer
        self.eos_token_ids = eos_token_ids
        self.max_model_len = max_model_len
        self.prefill_chunk = prefill_chunk
        self.scheduler = Scheduler(runner.cache, max_num_seqs, cache_tokens, padded_cache)
        self.speculation = speculation  # needs a runner with forward_all (logits at every position)
        self.stats = EngineStats()
        self._by_id: dict[str, Sequence] = {}
        self._rng = torch.Generator().manual_seed(seed)
        self._arrivals = itertools.count()
        self._refused: list[tuple[str, Delta]] = []
        self._token_bytes = TokenBytes(tokenizer)
        self._utf8 = Utf8Guard(self._token_bytes, len(tokenizer))
        self.on_admit: Callable[[], None] | None = None  # told when sequences start running, before their prefill
        self._mask_worker: MaskWorker | None = None  # started by the first request with a grammar

    # -- requests in and out ------------------------------------------------------------------
    def add(self, request: GenerationRequest) -> None:
        p = request.params
        seq = Sequence(
            request=request,
            answer=AnswerText(self.tokenizer, request.prompt_token_ids, p.stop),
            generator=torch.Generator().manual_seed(p.seed) if p.seed is not None else None,
            arrival=next(self._arrivals),
        )
        self.stats.prompt_tokens += len(request.prompt_token_ids)
        if len(seq.prompt_ids) >= self.max_model_len:  # no room for one token: it could never run
            error = f"the prompt holds {len(seq.prompt_ids)} tokens; this model's context is {self.max_model_len}"
            self._refused.append((seq.id, self._finish(seq, FinishReason.ERROR, "", error=error)))
            return
        if request.output_token_ids:
            ended = self._replay(seq, request.output_token_ids)
            if ended is not None:  # the tokens already sent ended the answer: nothing more to say
                self._refused.append((seq.id, self._finish(seq, ended, "")))
                return
        self._by_id[seq.id] = seq
        self.scheduler.waiting.append(seq)

    def _replay(self, seq: Sequence, token_ids: tuple[int, ...]) -> FinishReason | None:
        """Take in tokens an answer already holds, silently: the detokenizer, stop matcher, UTF-8
        state and grammar end up where they stood after the last of them, so the next delta's text
        continues exactly where the text sent ended. Returns why the answer is over, if it is."""
        for tok in token_ids:
            if self._take(seq, tok):
                return FinishReason.STOP
            if seq.constraint is not None and seq.constraint.consume(tok) is not None:
                return FinishReason.ERROR
            seq.answer.add(tok)
        return FinishReason.STOP if seq.answer.stopped else self._ending(seq)

    def abort(self, request_id: str) -> Delta | None:
        seq = self._by_id.get(request_id)
        if seq is None:
            return None
        if seq.status is SeqStatus.WAITING:
            self.scheduler.drop_waiting(seq)
        else:
            self.scheduler.remove(seq)
        self.stats.aborted += 1
        return self._finish(seq, FinishReason.ABORT, "")

    def fail_running(self, message: str) -> list[tuple[str, Delta]]:
        """After a failed forward the rows' cache cannot be trusted: end every running sequence with
        an error. Waiting sequences were not in that forward and go on."""
        out = []
        for seq in list(self.scheduler.rows):
            self.scheduler.remove(seq)
            out.append((seq.id, self._finish(seq, FinishReason.ERROR, "", error=message)))
        self.scheduler.cache.release()
        return out

    @property
    def num_running(self) -> int:
        return len(self.scheduler.rows)

    def snapshot(self) -> EngineStats:
        """A copy of the counters, safe to hand to another thread."""
        return replace(self.stats)

    @property
    def has_work(self) -> bool:
        return bool(self._refused) or self.scheduler.has_work

    # -- the loop -----------------------------------------------------------------------------
    def step(self) -> list[tuple[str, Delta]]:
        self.stats.steps += 1
        out, self._refused = self._refused, []
        first_new = len(self.scheduler.rows)
        self.scheduler.admit()
        self._mark_admitted(self.scheduler.rows[first_new:])
        if self.on_admit is not None and len(self.scheduler.rows) > first_new:
            self.on_admit()
        if self.runner.prefixes is not None:
            self._reuse_prefixes(self.runner.prefixes, self.scheduler.rows[first_new:])
        if self.scheduler.prefilling:
            self._prefill(out)
        self.stats.preempted += len(self.scheduler.make_room_for_decode())
        if self.scheduler.decoding:
            self._decode(out)
        return out

    def _mark_admitted(self, admitted: list[Sequence]) -> None:
        now = time.monotonic()
        for seq in admitted:
            if seq.queue_time is None:
                seq.queue_time = now - seq.request.arrival_time

    def _reuse_prefixes(self, prefixes: PrefixStore, admitted: list[Sequence]) -> None:
        """Start just-admitted sequences after the prefix the runner still holds from a finished one."""
        for seq in admitted:
            seq.num_cached = prefixes.reuse_prefix(seq.row, seq.prompt_ids + seq.output_ids, len(seq.prompt_ids))
            self.stats.reused_tokens += seq.num_cached

    def _prefill(self, out: list[tuple[str, Delta]]) -> None:
        """One forward over a contiguous run of prefilling rows, about `prefill_chunk` tokens: as the
        runner's prefill plan says, or else row by row, at most its `max_row_chunk` per row."""
        prefilling = self.scheduler.prefilling
        plan: PrefillPlan | None = getattr(self.runner, "prefill_plan", None)  # absent in older runners
        if plan is not None:
            rows = [PrefillRow(s.num_cached, len(s.prompt_ids), s.num_tokens) for s in prefilling]
            sizes = plan(rows, self.prefill_chunk)
        else:
            sizes, budget = [], self.prefill_chunk
            for seq in prefilling:
                if budget <= 0:
                    break
                sizes.append(min(budget, self.runner.max_row_chunk or budget, len(seq.uncached)))
                budget -= sizes[-1]
        seqs = prefilling[: len(sizes)]
        chunks = [seq.uncached[:n] for seq, n in zip(seqs, sizes, strict=True)]
        finishing = [s for s, c in zip(seqs, chunks, strict=True) if len(c) == len(s.uncached)]
        masks = self._start_masks(finishing)  # computed while the forward runs
        logits = self.runner.forward(seqs[0].row, chunks, [s.num_cached for s in seqs])
        self.stats.prefilled_tokens += sum(len(c) for c in chunks)
        done, done_logits = [], []
        for i, (seq, chunk) in enumerate(zip(seqs, chunks, strict=True)):
            seq.num_cached += len(chunk)
            if not seq.uncached:
                done.append(seq)
                done_logits.append(logits[i])
        if done:
            self.scheduler.promote(done)
            self._sample_and_emit(done, torch.stack(done_logits), out, masks)

    def _decode(self, out: list[tuple[str, Delta]]) -> None:
        seqs = self.scheduler.decoding
        drafts = self.speculation.propose(seqs) if self.speculation is not None else None
        masks = self._start_masks(seqs)  # computed while the forward runs
        if drafts is not None:
            self._decode_drafted(seqs, drafts, out, masks)
            return
        chunks = [[s.output_ids[-1]] for s in seqs]
        logits = self.runner.forward(0, chunks, [s.num_cached for s in seqs])  # [rows, vocab]
        for s in seqs:
            s.num_cached += 1
        self._sample_and_emit(seqs, logits, out, masks)

    def _decode_drafted(
        self, seqs: list[Sequence], drafts: Drafts, out: list, pending: tuple[list[int], Future] | None
    ) -> None:
        """One forward over each row's last token and its drafts (padded to `drafts.width`); every
        row's first position is sampled as a decode step samples it, then each draft is kept while
        it equals what the row picks at its position (speculation.py)."""
        width, starts = drafts.width, [s.num_cached for s in seqs]
        chunks = [_padded([s.output_ids[-1], *d], width) for s, d in zip(seqs, drafts.tokens, strict=True)]
        logits = self.runner.forward_all(0, chunks, starts)  # type: ignore[attr-defined]  # [rows * width, vocab]
        masks: Masks | None = (pending[0], pending[1].result()) if pending is not None else None
        firsts = sample(logits[::width], [self._row_state(s) for s in seqs], self._rng, masks, self._utf8)
        for i, (seq, draft, choice) in enumerate(zip(seqs, drafts.tokens, firsts, strict=True)):
            seq.num_cached = starts[i] + 1
            delta, kept = self._advance(seq, choice), 0
            while not delta.finished and kept < len(draft) and choice.token_id == draft[kept]:
                kept += 1
                seq.num_cached = starts[i] + 1 + kept
                row = logits[i * width + kept].unsqueeze(0)
                (choice,) = sample(row, [self._row_state(seq)], self._rng, guard=self._utf8)
                delta = _joined(delta, self._advance(seq, choice))
            if drafts.free:
                self.stats.guessed_tokens += len(draft)
                self.stats.guessed_kept += kept
            else:
                self.stats.draft_tokens += len(draft)
                self.stats.accepted_tokens += kept
                self.speculation.kept(seq, len(draft), kept)  # type: ignore[union-attr]
            out.append((seq.id, delta))

    def _start_masks(self, seqs: list[Sequence]) -> tuple[list[int], Future[torch.Tensor]] | None:
        """Begin the grammar masks of the constrained rows among `seqs` (positions in `seqs`)."""
        rows = [i for i, s in enumerate(seqs) if s.constraint is not None]
        if not rows:
            return None
        if self._mask_worker is None:
            self._mask_worker = MaskWorker(seqs[rows[0]].constraint.vocab_words)
        return rows, self._mask_worker.start([seqs[i].constraint for i in rows])

    @property
    def mask_seconds(self) -> tuple[float, ...]:
        """Recent per-step mask computation times (empty until a grammar is used)."""
        return tuple(self._mask_worker.times.samples) if self._mask_worker is not None else ()

    def _sample_and_emit(
        self, seqs: list[Sequence], logits: torch.Tensor, out: list, pending: tuple[list[int], Future] | None = None
    ) -> None:
        rows = [self._row_state(s) for s in seqs]
        masks: Masks | None = (pending[0], pending[1].result()) if pending is not None else None
        picked = sample(logits, rows, self._rng, masks, self._utf8)
        for seq, choice in zip(seqs, picked, strict=True):
            out.append((seq.id, self._advance(seq, choice)))

    def _row_state(self, seq: Sequence) -> RowState:
        p = seq.request.params
        banned: tuple[int, ...] = ()
        # Under a grammar, the grammar alone decides when the answer may end.
        if seq.constraint is None and (p.ignore_eos or len(seq.output_ids) < p.min_tokens):
            banned = tuple(self.eos_token_ids)
            if len(seq.output_ids) < p.min_tokens:
                banned += p.stop_token_ids
        if seq.generator is not None:  # the draw at this position depends on the seed and the position only
            reseed(seq.generator, p.seed, len(seq.output_ids))
        if seq.seen is None and p.repetition_penalty != 1.0:
            seq.seen = SeenTokens(seq.prompt_ids)
        return RowState(p, seq.prompt_ids, seq.output_ids, seq.generator, banned, seq.utf8, seq.seen)

    def _advance(self, seq: Sequence, choice: Sampled) -> Delta:
        """Append one sampled token and turn it into the delta the client sees."""
        tok = choice.token_id
        ends = self._take(seq, tok)
        self.stats.generated_tokens += 1
        logprobs = self._logprobs(choice)
        grammar = seq.constraint
        if ends:
            return self._end(seq, FinishReason.STOP, *seq.answer.finish(logprobs), (tok,))
        broken = grammar.consume(tok) if grammar is not None else None
        text, logprobs = seq.answer.add(tok, logprobs)
        if broken is not None:
            return self._end(seq, FinishReason.ERROR, text, logprobs, (tok,), error=f"grammar violated: {broken}")
        if seq.answer.stopped:
            return self._end(seq, FinishReason.STOP, text, logprobs, (tok,))
        ending = self._ending(seq)
        if ending is not None:
            tail, more = seq.answer.finish()
            return self._end(seq, ending, text + tail, logprobs + more, (tok,))
        return Delta(text=text, token_ids=(tok,), logprobs=logprobs)

    def _take(self, seq: Sequence, tok: int) -> bool:
        """Append `tok` to the answer and its UTF-8 state; True when it is a token that ends the
        answer (EOS, unless ignored outside a grammar, or a stop token)."""
        seq.output_ids.append(tok)
        utf8 = self._utf8.after(seq.utf8, tok)
        seq.utf8 = START if utf8 is None else utf8  # a broken character is over, as the decoder sees it
        p = seq.request.params
        is_eos = tok in self.eos_token_ids and (seq.constraint is not None or not p.ignore_eos)
        return is_eos or tok in p.stop_token_ids

    def _ending(self, seq: Sequence) -> FinishReason | None:
        """Why the answer ends after its latest token, though no stop token or string ended it."""
        if seq.constraint is not None and seq.constraint.complete:
            return FinishReason.STOP
        if len(seq.output_ids) >= seq.request.params.max_tokens or seq.num_tokens >= self.max_model_len:
            return FinishReason.LENGTH
        return None

    def _end(
        self, seq: Sequence, reason: FinishReason, text: str, logprobs, token_ids, error: str | None = None
    ) -> Delta:
        if self.runner.prefixes is not None:  # the next chat turn starts with these tokens
            held = (seq.prompt_ids + seq.output_ids)[: seq.num_cached]
            self.runner.prefixes.park(seq.row, held, len(seq.prompt_ids))
        self.scheduler.remove(seq)
        self.stats.finished += 1
        return self._finish(seq, reason, text, logprobs=logprobs, token_ids=token_ids, error=error)

    def _finish(self, seq: Sequence, reason: FinishReason, text: str, logprobs=(), token_ids=(), error=None):
        seq.status, seq.finish_reason = SeqStatus.FINISHED, reason
        self._by_id.pop(seq.id, None)
        usage = Usage(len(seq.prompt_ids), len(seq.output_ids), seq.queue_time)
        return Delta(text, tuple(token_ids), reason, usage, tuple(logprobs), error)

    def _logprobs(self, choice: Sampled) -> tuple[TokenLogprob, ...]:
        if choice.logprob is None:
            return ()
        name, data = self._token_bytes.name, self._token_bytes
        top = tuple((name(t), lp, list(data(t))) for t, lp in choice.top)
        return (TokenLogprob(name(choice.token_id), choice.logprob, list(data(choice.token_id)), top),)


def _padded(chunk: list[int], width: int) -> list[int]:
    """`chunk` filled up to `width` with its first token: a row without drafts takes its first position only."""
    return chunk + [chunk[0]] * (width - len(chunk))


def _joined(a: Delta, b: Delta) -> Delta:
    """One step's deltas of one sequence as one (several tokens, when drafts were kept)."""
    return Delta(a.text + b.text, a.token_ids + b.token_ids, b.finish_reason, b.usage, a.logprobs + b.logprobs, b.error)
