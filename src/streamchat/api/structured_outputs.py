"""What a request asks its answer to look like, as one grammar: OpenAI's `response_format` and
vLLM's `structured_outputs` (plus its older `guided_*` fields, which clients still send).

One constraint per request: asking for two (a schema and a regex) is a 400 naming both, never a
silent choice. The grammar is compiled on a worker thread (`compile_constraint`), and a grammar
llguidance cannot compile is a 400 carrying its message.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from streamchat.api.errors import APIError
from streamchat.api.ready import Ready
from streamchat.engine.grammar import specs
from streamchat.engine.grammar.compiler import GrammarError
from streamchat.engine.grammar.constraint import Constraint

JsonSchema = dict[str, Any] | bool


class JsonSchemaFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field("response", pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    schema_: JsonSchema = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """OpenAI's `response_format`."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("'json_schema' is required when type is 'json_schema'")
        return self


class StructuredOutputs(BaseModel):
    """vLLM's `structured_outputs`: exactly one of its constraint fields."""

    model_config = ConfigDict(extra="forbid")

    json_: JsonSchema | str | None = Field(None, alias="json")
    regex: str | None = None
    choice: list[str] | None = Field(None, min_length=1)
    grammar: str | None = None
    json_object: bool | None = None


class StructuredFields(BaseModel):
    """The request fields that ask for a constrained answer (mixed into the request bodies)."""

    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = None
    guided_json: JsonSchema | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = Field(None, min_length=1)
    guided_grammar: str | None = None


@dataclass(frozen=True)
class GrammarRequest:
    grammar: str  # llguidance's grammar text
    description: str  # what it enforces, in words
    param: str  # the request field it came from, for errors


def requested_grammar(body: StructuredFields) -> GrammarRequest | None:
    """The one constraint `body` asks for, or None for free text."""
    found = [g for g in _candidates(body) if g is not None]
    if len(found) > 1:
        names = " and ".join(f"'{g.param}'" for g in found)
        raise APIError(400, f"{names} each constrain the answer; send only one", param=found[1].param)
    return found[0] if found else None


def _candidates(body: StructuredFields) -> list[GrammarRequest | None]:
    out: list[GrammarRequest | None] = [_from_response_format(body.response_format)]
    so = body.structured_outputs
    if so is not None:
        given = {k: v for k, v in so.model_dump(by_alias=True).items() if v is not None and v is not False}
        if len(given) != 1:
            message = "'structured_outputs' takes exactly one of json, regex, choice, grammar, json_object"
            raise APIError(400, message, param="structured_outputs")
        ((kind, value),) = given.items()
        if kind == "json_object":
            kind, value = "json", {"type": "object"}
        out.append(_grammar(kind, value, f"structured_outputs.{kind}"))
    for kind in ("json", "regex", "choice", "grammar"):
        value = getattr(body, f"guided_{kind}")
        if value is not None:
            out.append(_grammar(kind, value, f"guided_{kind}"))
    return out


def _from_response_format(rf: ResponseFormat | None) -> GrammarRequest | None:
    if rf is None or rf.type == "text":
        return None
    if rf.type == "json_object":
        return GrammarRequest(specs.json_schema({"type": "object"}), "JSON object", "response_format")
    fmt = rf.json_schema
    if fmt is None:  # the model validator refuses this; kept for the type checker
        raise APIError(400, "'json_schema' is required", param="response_format")
    return _grammar("json", fmt.schema_, "response_format.json_schema.schema", fmt.name)


def _grammar(kind: str, value: Any, param: str, name: str | None = None) -> GrammarRequest:
    try:
        if kind == "json":
            schema = json.loads(value) if isinstance(value, str) else value
            if not isinstance(schema, dict | bool):
                raise ValueError("a JSON schema is an object or a boolean")
            return GrammarRequest(specs.json_schema(schema), f"JSON schema {name or ''}".strip(), param)
        if kind == "regex":
            return GrammarRequest(specs.regex(value), "regular expression", param)
        if kind == "choice":
            if not all(isinstance(c, str) and c for c in value):
                raise ValueError("choices are non-empty strings")
            return GrammarRequest(specs.choice(value), "choice", param)
        return GrammarRequest(specs.lark(value), "grammar", param)
    except (ValueError, TypeError) as exc:
        raise APIError(400, f"'{param}' cannot be used: {exc}", param=param) from exc


async def compile_constraint(ready: Ready, wanted: GrammarRequest) -> Constraint:
    """Compile on a worker thread: a large schema never stalls the event loop or the engine."""
    compiler = ready.model.grammars
    if compiler is None:
        raise APIError(400, f"this model cannot constrain its answers ('{wanted.param}')", param=wanted.param)
    try:
        return await asyncio.to_thread(compiler.compile, wanted.grammar, wanted.description)
    except GrammarError as exc:
        raise APIError(400, f"'{wanted.param}' cannot be enforced: {exc}", param=wanted.param) from exc
