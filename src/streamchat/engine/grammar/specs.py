"""The constraints a request can ask for, written as llguidance grammars.

JSON is generated on one line with at most one space after `,` and `:`: a model may not pad an
answer with endless whitespace, and the answer stays short. A schema's own top-level
`x-guidance` settings take precedence.
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
    return llguidance.LLMatcher.grammar_from_json_schema({**schema, "x-guidance": layout})


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
