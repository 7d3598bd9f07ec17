"""The constraints a request can ask for, written as llguidance grammars.

JSON is generated on one line with at most one space after `,` and `:`: a model may not pad an
answer with endless whitespace, and the answer stays short. A schema's own top-level
`x-guidance` settings take precedence.

An object schema that lists `properties` and says nothing of other keys is generated closed (no
keys beyond those listed), as vLLM's default grammar backend does: JSON Schema would allow any
extra key, and a small model given that freedom invents keys and rambles inside them. The answer
still validates against the schema as sent. A schema that wants extra keys says so with
`additionalProperties` (or `patternProperties`, `unevaluatedProperties`).
"""

from __future__ import annotations

import json
from typing import Any

import llguidance

JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ?", "key_separator": ": ?"}


def json_schema(schema: dict[str, Any] | bool) -> str:
    """Any JSON value the schema accepts (`{"type": "object"}` for OpenAI's JSON mode)."""
    if isinstance(schema, bool):
        schema = {} if schema else {"not": {}}
    layout = {**JSON_LAYOUT, **(schema.get("x-guidance") or {})}
    return llguidance.LLMatcher.grammar_from_json_schema({**closed(schema), "x-guidance": layout})


_OPEN_KEYS = ("additionalProperties", "patternProperties", "unevaluatedProperties")
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("anyOf", "oneOf", "prefixItems")
_SCHEMAS = ("items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames")


def closed(schema: Any) -> Any:
    """A copy of `schema` whose objects with listed properties allow no other keys unless it says so.

    Members of `allOf` are left open: closing one would refuse the properties another adds.
    """
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in out and not any(k in out for k in _OPEN_KEYS):
        out["additionalProperties"] = False
    for key in _SCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: closed(sub) for name, sub in out[key].items()}
    for key in _SCHEMA_LISTS:
        if isinstance(out.get(key), list):
            out[key] = [closed(sub) for sub in out[key]]
    for key in _SCHEMAS:
        if key in out:
            out[key] = closed(out[key]) if isinstance(out[key], dict) else out[key]
    return out


def regex(pattern: str) -> str:
    return llguidance.LLMatcher.grammar_from_regex(pattern)


def choice(options: list[str]) -> str:
    """Exactly one of `options`."""
    return llguidance.grammar_from("choice", json.dumps(options))


def lark(grammar: str) -> str:
    """llguidance's Lark dialect, or a GBNF grammar (llama.cpp's), which llguidance converts."""
    return llguidance.grammar_from("grammar", grammar)


def literal(text: str) -> str:
    """`text` as a Lark string literal."""
    return json.dumps(text, ensure_ascii=False)
