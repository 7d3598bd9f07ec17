"""An engine for models that answer through their own `stream_chat`: one answer at a time.

`StreamChatEngine` has the step-loop face of `LLMEngine` (`add`, `abort`, `step`, `snapshot`, …),
so the real `AsyncEngine` drives it unchanged: its thread runs the model, the event loop never
does, and `/health`, `/metrics`, admission and every protocol see what they see of any engine.
A step advances the current answer by one yield of stream_chat; between steps the thread reads
its inbox, so an abort (a client that left) closes the model's generator before its next token.
Other requests wait in arrival order: stream_chat keeps its own cache and cannot share a batch.

Deltas carry the answer's text, released UTF-8-safe by `ResponseDeltas`. stream_chat hands back
text, not the ids it sampled, so a delta's `token_ids` are its text as the tokenizer encodes it
(metrics time tokens by them) and the usage counts the answer's text the same way.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, fields, replace
from typing import Any

from streamchat.engine.async_engine import AsyncEngine
from streamchat.engine.llm_engine import EngineStats
from streamchat.engine.remote_code.chat_call import ChatCall, refuse_unhonoured, response_text
from streamchat.engine.remote_code.compat import described
from streamchat.engine.remote_code.conversation import ChatTurn
from streamchat.engine.remote_code.loader import StreamChatModel
from streamchat.engine.remote_code.prompts import TurnTokenizer
from streamchat.engine.remote_code.responses import ResponseDeltas
from streamchat.engine.stops import StopMatcher
from streamchat.engine.types import Delta, FinishReason, GenerationRequest, Usage

log = logging.getLogger(__name__)
_END = object()  # what next() gives back once stream_chat has returned


@dataclass
class TurnRequest(GenerationRequest):
    """A request with the conversation its prompt ids were rendered from."""

    turn: ChatTurn = field(default_factory=lambda: ChatTurn("", ()))

    @classmethod
    def of(cls, request: GenerationRequest, turn: ChatTurn) -> TurnRequest:
        given = {f.name: getattr(request, f.name) for f in fields(request) if f.init}
        return cls(**given, turn=turn)


@dataclass
class _Answer:
    request: TurnRequest
    responses: Iterator[Any]  # the model's own generator
    queue_time: float
    text: ResponseDeltas = field(default_factory=ResponseDeltas)
    stops: StopMatcher = field(init=False)
    yields: int = 0

    def __post_init__(self) -> None:
        self.stops = StopMatcher(self.request.params.stop)


class StreamChatEngine:
    """The step loop over a model's stream_chat; owned by the engine thread, like `LLMEngine`."""

    mask_seconds: tuple[float, ...] = ()  # no grammars here

    def __init__(self, call: ChatCall, tokenizer: Any, max_model_len: int) -> None:
        self.call = call
        self.tokenizer = tokenizer  # the model's own: stream_chat takes it
        self.max_model_len = max_model_len
        self.stats = EngineStats()
        self.on_admit: Callable[[], None] | None = None
        self._waiting: deque[TurnRequest] = deque()
        self._current: _Answer | None = None
        self._refused: list[tuple[str, Delta]] = []

    # -- requests in and out ------------------------------------------------------------------
    def add(self, request: TurnRequest) -> None:
        prompt = len(request.prompt_token_ids)
        self.stats.prompt_tokens += prompt
        if prompt >= self.max_model_len:
            error = f"the prompt holds {prompt} tokens; this model's context is {self.max_model_len}"
            usage = Usage(prompt, 0, None)
            self._refused.append((request.request_id, Delta("", (), FinishReason.ERROR, usage, (), error)))
            return
        self._waiting.append(request)

    def abort(self, request_id: str) -> Delta | None:
        if self._current is not None and self._current.request.request_id == request_id:
            self.stats.aborted += 1
            return self._end(FinishReason.ABORT, "")[0][1]
        for request in self._waiting:
            if request.request_id == request_id:
                self._waiting.remove(request)
                self.stats.aborted += 1
                return Delta("", (), FinishReason.ABORT, Usage(len(request.prompt_token_ids), 0, None))
        return None

    def fail_running(self, message: str) -> list[tuple[str, Delta]]:
        return self._end(FinishReason.ERROR, "", message) if self._current is not None else []

    @property
    def num_running(self) -> int:
        return int(self._current is not None)

    def snapshot(self) -> EngineStats:
        return replace(self.stats)

    @property
    def has_work(self) -> bool:
        return bool(self._refused or self._current or self._waiting)

    # -- the loop -----------------------------------------------------------------------------
    def step(self) -> list[tuple[str, Delta]]:
        self.stats.steps += 1
        out, self._refused = self._refused, []
        if self._current is None and self._waiting:
            out.extend(self._start(self._waiting.popleft()))
        if self._current is not None:
            out.extend(self._advance(self._current))
        return out

    def _start(self, request: TurnRequest) -> list[tuple[str, Delta]]:
        """Begin answering `request`; a call that fails at once ends it with the cause."""
        p = request.params
        max_length = len(request.prompt_token_ids) + p.max_tokens
        queue_time = time.monotonic() - request.arrival_time
        try:
            responses = self.call.start(self.tokenizer, request.turn, p, max_length)
        except Exception as exc:  # a chat method that is no generator fails when called
            log.exception("stream_chat failed")
            usage = Usage(len(request.prompt_token_ids), 0, queue_time)
            return [(request.request_id, Delta("", (), FinishReason.ERROR, usage, (), described(exc)))]
        self._current = _Answer(request, responses, queue_time)
        if self.on_admit is not None:
            self.on_admit()
        return []

    def _advance(self, answer: _Answer) -> list[tuple[str, Delta]]:
        try:
            item = next(answer.responses, _END)
        except Exception as exc:  # the model's code failed: this answer ends, the engine goes on
            log.exception("stream_chat failed")
            return self._end(FinishReason.ERROR, "", described(exc))
        if item is _END:
            tail = self._tail(answer)
            return self._end(self._natural_end(answer), tail)
        answer.yields += 1
        text = answer.stops.feed(answer.text.update(response_text(item)))
        if answer.stops.stopped:
            return self._end(FinishReason.STOP, text)
        if answer.yields >= answer.request.params.max_tokens:  # each yield is at least one token
            return self._end(FinishReason.LENGTH, text + self._tail(answer))
        return [(answer.request.request_id, Delta(text, self._ids(text)))]

    def _tail(self, answer: _Answer) -> str:
        """What the answer still holds back at its end, through the stop strings."""
        text = answer.stops.feed(answer.text.finish())
        return text if answer.stops.stopped else text + answer.stops.flush()

    def _natural_end(self, answer: _Answer) -> FinishReason:
        """stream_chat ended on its own: by its end token, or by max_length when the answer filled its
        budget (counted by yields, one token each, or by the text's tokens, whichever is more)."""
        if answer.stops.stopped:
            return FinishReason.STOP
        spent = max(answer.yields, len(self._ids(answer.text.sent)))
        return FinishReason.LENGTH if spent >= answer.request.params.max_tokens else FinishReason.STOP

    def _end(self, reason: FinishReason, text: str, error: str | None = None) -> list[tuple[str, Delta]]:
        answer, self._current = self._current, None
        if answer is None:
            return []
        close = getattr(answer.responses, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):  # a generator that fails on close has stopped all the same
                close()
        if answer.text.rewritten:
            log.warning("the model rewrote text already streamed; the client's copy keeps what it was sent")
        completion = len(self._ids(answer.text.sent))
        if reason in (FinishReason.STOP, FinishReason.LENGTH):
            self.stats.finished += 1
            self.stats.generated_tokens += completion
        usage = Usage(len(answer.request.prompt_token_ids), completion, answer.queue_time)
        return [(answer.request.request_id, Delta(text, self._ids(text), reason, usage, (), error))]

    def _ids(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer.encode(text, add_special_tokens=False)) if text else ()


class StreamChatAsyncEngine(AsyncEngine):
    """`AsyncEngine` over a `StreamChatEngine`: it maps prompt ids back to their conversation and
    refuses, before queuing, what stream_chat cannot honour (the API answers 400)."""

    def __init__(self, llm: StreamChatEngine, prompts: TurnTokenizer) -> None:
        super().__init__(llm)  # type: ignore[arg-type]  # the same step-loop face as LLMEngine
        self._prompts = prompts

    def generate(self, request: GenerationRequest) -> AsyncIterator[Delta]:
        refuse_unhonoured(request)
        turn = self._prompts.turn_for(request.prompt_token_ids)
        return super().generate(TurnRequest.of(request, turn))


def serving(model: StreamChatModel) -> tuple[StreamChatAsyncEngine, TurnTokenizer]:
    """The engine that answers through `model`'s stream_chat, and the tokenizer the HTTP layer holds."""
    prompts = TurnTokenizer(model.tokenizer, model.call.style)
    engine = StreamChatEngine(model.call, model.tokenizer, model.max_model_len)
    return StreamChatAsyncEngine(engine, prompts), prompts
