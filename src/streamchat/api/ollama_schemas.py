"""Request bodies of Ollama's API (`/api/chat`, `/api/generate`, `/api/show`), validated once.

Ollama's Go server ignores fields and options it does not know, so these models allow extra
names too (`keep_alive`, `truncate`, `num_thread`…); what they would change is decided in
`ollama_requests.py`, which refuses, with a 400 naming it, anything that would change the answer
and cannot be honoured. Ranges are those of the OpenAI request the body becomes, so a bad value
is refused here, under its Ollama name (`options.temperature`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from streamchat.api.text_repair import RepairedModel
from streamchat.api.tools import Tool

# "json", or a JSON schema; "" (what Go clients send for none) means free text
Format = Literal["", "json"] | dict[str, Any]
Think = bool | Literal["high", "medium", "low", "max"]


class OllamaOptions(BaseModel):
    """`options`: the sampling settings we honour are typed; the rest are checked by name later."""

    model_config = ConfigDict(extra="allow")

    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)  # negative: a random seed, as in Ollama
    num_predict: int | None = Field(None, ge=-2)  # -1 until a stop, -2 until the context is full
    stop: list[str] | None = None
    repeat_penalty: float | None = Field(None, gt=0.0, le=10.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    num_ctx: int | None = Field(None, ge=1)
    repeat_last_n: int | None = Field(None, ge=-1)
    mirostat: int | None = Field(None, ge=0, le=2)
    typical_p: float | None = None
    tfs_z: float | None = None

    @field_validator("stop", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and len(v) > 16:
            raise ValueError("at most 16 stop strings")
        if v is not None and any(s == "" for s in v):
            raise ValueError("stop strings must not be empty")
        return v

    @field_validator("num_predict")
    @classmethod
    def _not_zero(cls, v: int | None) -> int | None:
        if v == 0:
            raise ValueError("0 answers nothing: give a count, -1 (until a stop) or -2 (fill the context)")
        return v


class OllamaFunctionCall(BaseModel):
    index: int | None = None
    name: str = Field(..., min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)


class OllamaToolCall(BaseModel):
    id: str | None = None
    function: OllamaFunctionCall


class OllamaMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = ""
    images: list[str] | None = None
    tool_calls: list[OllamaToolCall] | None = None
    tool_name: str | None = None  # a tool turn: which function answered
    tool_call_id: str | None = None  # a tool turn: which call (Ollama 0.12.10 and later)

    @field_validator("role", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v  # Ollama takes "User" as "user"


class OllamaAnswerFields(RepairedModel):
    """What `/api/chat` and `/api/generate` share."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(..., min_length=1)
    format: Format | None = None
    options: OllamaOptions | None = None
    stream: bool | None = None  # null or absent: streamed, as in Ollama
    think: Think | None = None
    logprobs: bool = False
    top_logprobs: int = Field(0, ge=0, le=20)

    @property
    def streamed(self) -> bool:
        return self.stream is not False


class OllamaChatRequest(OllamaAnswerFields):
    messages: list[OllamaMessage] = Field(default_factory=list)
    tools: list[Tool] | None = None


class OllamaGenerateRequest(OllamaAnswerFields):
    prompt: str = ""
    suffix: str = ""
    system: str = ""
    template: str = ""
    context: list[int] | None = None
    raw: bool = False
    images: list[str] | None = None


class OllamaShowRequest(RepairedModel):
    model_config = ConfigDict(extra="allow")

    model: str = ""
    name: str = ""  # the older spelling of `model`
