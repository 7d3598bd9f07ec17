"""The currency between the HTTP layer and the engine.

`api/` builds a `GenerationRequest`; the engine answers with a stream of `Delta`s. Neither side
knows anything else about the other, so both engines (transformers, llama.cpp) and every protocol
(OpenAI, the seed's `/stream`, ChatGLM's `api.py`) meet here.
"""

from __future__ import annotations

import enum
import itertools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamchat.engine.grammar.constraint import Constraint


class FinishReason(enum.StrEnum):
    """Why a sequence stopped; the values are the OpenAI wire values plus `abort`/`error`."""

    STOP = "stop"
    LENGTH = "length"
    ABORT = "abort"
    ERROR = "error"


@dataclass(frozen=True)
class SamplingParams:
    """Per-request decoding settings; every request in a batch carries its own."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    min_tokens: int = 0
    logprobs: bool = False
    top_logprobs: int = 0

    @property
    def greedy(self) -> bool:
        """Temperature 0 means argmax: no randomness and no filters needed."""
        return self.temperature <= 1e-5

    @property
    def needs_penalties(self) -> bool:
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0


_request_ids = itertools.count()


def new_request_id(prefix: str = "req") -> str:
    return f"{prefix}-{next(_request_ids)}"


@dataclass
class GenerationRequest:
    """A tokenized prompt and how to continue it."""

    prompt_token_ids: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    request_id: str = field(default_factory=new_request_id)
    arrival_time: float = field(default_factory=time.monotonic)  # queue time is measured from here
    owner: str | None = None  # whose request it is (an API key's digest), for per-key limits
    constraint: Constraint | None = None  # a compiled grammar the answer must follow (None: free text)
    # An answer begun elsewhere (a stream taken over from a process that died): these tokens were
    # generated and sent already; decoding continues after them and the text after theirs.
    output_token_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    bytes: list[int]
    top: tuple[tuple[str, float, list[int]], ...] = ()


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    queue_time: float | None = None  # seconds from arrival to first scheduled; None if never scheduled

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Delta:
    """What one engine step added to one request's answer.

    `text` may be empty (a token that completes no character yet, or held back because it may
    begin a stop string); `finish_reason` is set on the last delta only, which also carries `usage`.
    """

    text: str
    token_ids: tuple[int, ...] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    logprobs: tuple[TokenLogprob, ...] = ()
    error: str | None = None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None
