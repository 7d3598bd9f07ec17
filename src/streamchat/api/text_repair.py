"""Request text that UTF-8 cannot carry, repaired the way browsers repair it.

JSON may escape UTF-16 surrogates (`"\\ud83c"`): JavaScript's `slice` cuts an emoji in half and
`JSON.stringify` sends the half as is. Python decodes it into a `str` that cannot be encoded to
UTF-8, and tokenizers then raise. Every request body is repaired before validation, as a
browser's USVString conversion does: an escaped surrogate pair becomes the character it stands for,
a lone surrogate becomes U+FFFD. Nothing else in the text changes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, model_validator


def repaired(value: Any) -> Any:
    """`value` (a parsed JSON value) with every string's lone surrogates replaced by U+FFFD.

    Walked with a stack of its own, not by recursion: however deep a body nests, it is the JSON
    parser and the field validation that decide whether it is acceptable.
    """
    root = [value]
    stack: list[tuple[list | dict, Any]] = [(root, 0)]
    while stack:
        container, key = stack.pop()
        item = container[key]
        if isinstance(item, str):
            container[key] = usv(item)
        elif isinstance(item, list):
            item = container[key] = list(item)
            stack.extend((item, i) for i in range(len(item)))
        elif isinstance(item, dict):
            item = container[key] = {usv(k) if isinstance(k, str) else k: v for k, v in item.items()}
            stack.extend((item, k) for k in item)
    return root[0]


def usv(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text


class RepairedModel(BaseModel):
    """A request body whose text is repaired before its fields are validated."""

    @model_validator(mode="before")
    @classmethod
    def _repair_text(cls, data: Any) -> Any:
        return repaired(data)
