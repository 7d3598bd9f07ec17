"""Request bodies of Anthropic's Messages API, validated with Anthropic's ranges.

Anthropic refuses fields it does not know, and so do we: an unknown field is a 400 naming it.
Fields that only steer Anthropic's own service (`metadata`, `service_tier`, `cache_control`,
`inference_geo`, a block's `citations`) are accepted and change nothing. Fields that would change
the answer in ways a local text model cannot honour (extended thinking, images, documents, server
tools, MCP servers, containers, effort levels) are a 400 naming them, never silently dropped.

Content may be a string or a list of blocks; a string is read as one text block, so every
validation error names the block it is about (`messages.0.content.1.tool_use.id`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from streamchat.api.text_repair import RepairedModel

TOOL_NAME = r"^[a-zA-Z0-9_-]{1,64}$"

# Top-level fields Anthropic defines that no model here can honour, and why.
_UNSUPPORTED = {
    "thinking": "extended thinking is not supported by this server",
    "mcp_servers": "MCP servers are not supported by this server",
    "container": "code execution containers are not supported by this server",
    "context_management": "context management is not supported by this server",
}
# Top-level fields that steer Anthropic's service (caching, routing, billing): accepted, no effect.
_ACCEPTED = {"metadata", "service_tier", "cache_control", "inference_geo"}
_BLOCK_TYPES = ("text", "tool_use", "tool_result")


def _as_blocks(value: Any) -> Any:
    """A string is one text block."""
    return [{"type": "text", "text": value}] if isinstance(value, str) else value


def _known_blocks(value: Any) -> Any:
    """Refuse block types this server cannot read with a message naming them (images, documents...)."""
    for block in value if isinstance(value, list) else ():
        kind = block.get("type") if isinstance(block, dict) else None
        if isinstance(kind, str) and kind not in _BLOCK_TYPES:
            raise PydanticCustomError(
                "unsupported_block",
                "content blocks of type '{kind}' are not supported: this server serves a text-only model "
                "and reads 'text', 'tool_use' and 'tool_result' blocks",
                {"kind": kind},
            )
        if kind == "tool_result":
            _known_blocks(block.get("content"))
    return value


class _Block(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cache_control: dict[str, Any] | None = None  # a caching hint for Anthropic's service: no effect here


class TextBlock(_Block):
    type: Literal["text"]
    text: str
    citations: list[dict[str, Any]] | None = None  # sources of an earlier answer's text: no effect here


class ToolUseBlock(_Block):
    type: Literal["tool_use"]
    id: str = Field(..., min_length=1)
    name: str = Field(..., pattern=TOOL_NAME)
    input: dict[str, Any]


class ToolResultBlock(_Block):
    type: Literal["tool_result"]
    tool_use_id: str = Field(..., min_length=1)
    content: list[TextBlock] = Field(default_factory=list)
    is_error: bool = False

    @field_validator("content", mode="before")
    @classmethod
    def _blocks(cls, v: Any) -> Any:
        return _known_blocks(_as_blocks(v))

    def text(self) -> str:
        return "".join(b.text for b in self.content)


ContentBlock = Annotated[TextBlock | ToolUseBlock | ToolResultBlock, Field(discriminator="type")]


class InputMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: list[ContentBlock]

    @field_validator("content", mode="before")
    @classmethod
    def _blocks(cls, v: Any) -> Any:
        return _known_blocks(_as_blocks(v))


class ToolDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(..., pattern=TOOL_NAME)
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    cache_control: dict[str, Any] | None = None  # no effect here
    strict: bool | None = None  # calls always follow the schema here (a grammar), strict or not
    eager_input_streaming: bool | None = None  # input is always streamed as it is generated

    @field_validator("input_schema")
    @classmethod
    def _object_schema(cls, v: dict[str, Any]) -> dict[str, Any]:
        if v.get("type") != "object":
            raise PydanticCustomError("object_schema", 'a tool\'s input_schema must have "type": "object"')
        return v


class ToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = False

    @model_validator(mode="after")
    def _named_when_tool(self) -> ToolChoice:
        if (self.type == "tool") != (self.name is not None):
            raise PydanticCustomError("tool_name", "'name' is required with type 'tool', and only with it")
        return self


class OutputFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(..., alias="schema")


class OutputConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: OutputFormat | None = None
    effort: str | None = None

    @model_validator(mode="after")
    def _no_effort(self) -> OutputConfig:
        if self.effort is not None:
            raise PydanticCustomError("unsupported_effort", "'effort' levels are not supported by this server")
        return self


class Conversation(RepairedModel):
    """What `count_tokens` and `create` share: the prompt, as the model will see it."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(..., min_length=1)
    system: list[TextBlock] = Field(default_factory=list)
    messages: list[InputMessage] = Field(..., min_length=1)
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoice | None = None
    output_config: OutputConfig | None = None

    @field_validator("system", mode="before")
    @classmethod
    def _system_blocks(cls, v: Any) -> Any:
        return _known_blocks(_as_blocks(v))

    @field_validator("tools", mode="before")
    @classmethod
    def _custom_tools(cls, v: Any) -> Any:
        for tool in v if isinstance(v, list) else ():
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind not in (None, "custom"):
                raise PydanticCustomError(
                    "unsupported_tool",
                    "server tools ('{kind}') are not supported by this server; declare tools with 'input_schema'",
                    {"kind": str(kind)},
                )
        return v

    def refused_field(self) -> str | None:
        """Why a top-level field this body carries cannot be honoured, naming it; None when all can."""
        for name, value in (self.model_extra or {}).items():
            if name == "thinking" and isinstance(value, dict) and value.get("type") == "disabled":
                continue
            if name in _UNSUPPORTED:
                return f"'{name}': {_UNSUPPORTED[name]}"
            if name not in _ACCEPTED:
                return f"'{name}': Extra inputs are not permitted"
        return None


class MessagesRequest(Conversation):
    """`POST /v1/messages`."""

    max_tokens: int = Field(..., ge=1)
    stop_sequences: list[Annotated[str, Field(min_length=1)]] | None = Field(None, max_length=16)
    temperature: float | None = Field(None, ge=0.0, le=1.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0)
    stream: bool = False
    resumable: bool = Field(True, description="keep generating for a while after a disconnect, for resumption")
