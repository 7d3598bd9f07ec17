"""One request's state inside the engine, made explicit.

A sequence moves WAITING → PREFILLING → DECODING → FINISHED; preemption moves it back to
WAITING (its output is kept and recomputed), abort moves it straight to FINISHED.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from streamchat.engine.answer_text import AnswerText
from streamchat.engine.grammar.constraint import Constraint
from streamchat.engine.seen_tokens import SeenTokens
from streamchat.engine.types import FinishReason, GenerationRequest
from streamchat.engine.utf8_guard import START

if TYPE_CHECKING:
    from streamchat.engine.speculation import Lookup


class SeqStatus(enum.Enum):
    WAITING = enum.auto()
    PREFILLING = enum.auto()
    DECODING = enum.auto()
    FINISHED = enum.auto()


@dataclass(eq=False)
class Sequence:
    request: GenerationRequest
    answer: AnswerText
    generator: torch.Generator | None
    status: SeqStatus = SeqStatus.WAITING
    output_ids: list[int] = field(default_factory=list)
    num_cached: int = 0  # tokens whose keys/values are in the cache
    finish_reason: FinishReason | None = None
    row: int = -1
    queue_time: float | None = None  # set when first admitted; preemption does not reset it
    arrival: int = 0  # order of arrival in the engine: the higher, the newer
    lookup: Lookup | None = None  # its n-grams and drafting state, once it drafts (speculation.py)
    utf8: int = START  # where its answer's bytes stand in a character (utf8_guard.py)
    seen: SeenTokens | None = None  # its distinct token ids, once a repetition penalty reads them (sampler.py)

    @property
    def id(self) -> str:
        return self.request.request_id

    @property
    def constraint(self) -> Constraint | None:
        return self.request.constraint

    @property
    def prompt_ids(self) -> list[int]:
        return self.request.prompt_token_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def uncached(self) -> list[int]:
        """Tokens to feed next: the rest of the prompt (and output, after preemption)."""
        ids = self.prompt_ids + self.output_ids
        return ids[self.num_cached :]

    def preempt(self) -> None:
        self.status = SeqStatus.WAITING
        self.num_cached = 0
        self.row = -1
