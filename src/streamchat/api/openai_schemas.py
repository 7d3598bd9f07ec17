"""Request bodies of the OpenAI-compatible routes, validated once, with OpenAI's ranges.

Fields the server cannot honour are refused with a 400 naming them rather than silently ignored.
Extra sampling fields that vLLM also accepts (`top_k`, `min_p`, `repetition_penalty`,
`min_tokens`, `ignore_eos`, `stop_token_ids`) are part of the schema so benchmarks can force exact
lengths.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from streamchat.api.structured_outputs import StructuredFields
from streamchat.api.text_repair import RepairedModel
from streamchat.api.tools import Tool, ToolChoice
from streamchat.engine.types import SamplingParams


class StreamOptions(BaseModel):
    include_usage: bool = False
    model_config = ConfigDict(extra="allow")


class SamplingFields(RepairedModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=-1)
    min_p: float = Field(0.0, ge=0.0, le=1.0)
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    n: int = Field(1, ge=1, le=1, description="only one choice per request is supported")
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0)
    user: str | None = None
    resumable: bool = Field(True, description="keep generating for a while after a disconnect, for resumption")

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 16:
            raise ValueError("at most 16 stop strings")
        if any(s == "" for s in stops):
            raise ValueError("stop strings must not be empty")
        return stops

    def sampling(
        self, max_tokens: int, logprobs: bool = False, top_logprobs: int = 0, defaults: dict[str, float] | None = None
    ) -> SamplingParams:
        """The request's settings; a field the request left unset takes the model's default when it has one."""
        given = self.model_fields_set
        chosen = {
            name: getattr(self, name) if name in given or name not in (defaults or {}) else defaults[name]
            for name in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")
        }
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=chosen["temperature"],
            top_p=chosen["top_p"],
            top_k=max(int(chosen["top_k"]), 0),
            min_p=chosen["min_p"],
            repetition_penalty=chosen["repetition_penalty"],
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            seed=self.seed,
            stop=tuple(self.stop or ()),
            stop_token_ids=tuple(self.stop_token_ids or ()),
            ignore_eos=self.ignore_eos,
            min_tokens=min(self.min_tokens, max_tokens),
            logprobs=logprobs,
            top_logprobs=top_logprobs,
        )

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CalledFunction(BaseModel):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class AssistantToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: CalledFunction


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[AssistantToolCall] | None = None  # an assistant turn that called tools
    tool_call_id: str | None = None  # a tool turn: which call this is the result of

    def text(self) -> str:
        """Plain text of the message; only text content parts are supported."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError("only text content parts are supported")
            parts.append(part["text"])
        return "".join(parts)


# Fields OpenAI defines that would change the answer but that no model here can honour.
_UNSUPPORTED = {
    "functions": "use 'tools'",
    "function_call": "use 'tool_choice'",
    "logit_bias": "not supported",
    "audio": "audio output is not supported",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
}


class ChatCompletionRequest(SamplingFields, StructuredFields):
    messages: list[ChatMessage] = Field(..., min_length=1)
    logprobs: bool = False
    top_logprobs: int = Field(0, ge=0, le=20)
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool = True
    modalities: list[Literal["text"]] | None = None

    @model_validator(mode="after")
    def _no_unsupported_fields(self) -> ChatCompletionRequest:
        for name, why in _UNSUPPORTED.items():
            if (self.model_extra or {}).get(name) not in (None, {}, []):
                raise ValueError(f"'{name}': {why}")
        return self


class CompletionRequest(SamplingFields, StructuredFields):
    prompt: str | list[int] | list[str] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = Field(False)
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1, le=1)
