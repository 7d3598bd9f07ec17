"""Request text that UTF-8 cannot carry, repaired the way browsers repair it.

JSON may escape UTF-16 surrogates (`"\\ud83c"`): JavaScript's `slice` cuts an emoji in half and
`JSON.stringify` sends the half as is. Python decodes it into a `str` that cannot be encoded to
UTF-8, and tokenizers then raise. Every request body is repaired before validation, as a
browser's USVString conversion does: an escaped surrogate pair becomes the character it stands for,
a lone surrogate becomes U+FFFD. Nothing else in the text changes.
"""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 64  # no request of ours nests deeper; far deeper would exhaust the recursion limit


def repaired(value: Any, depth: int = 0) -> Any:
    """`value` (a parsed JSON value) with every string's lone surrogates replaced by U+FFFD.

    Raises ValueError (a 400 through validation) for JSON nested deeper than `MAX_DEPTH`.
    """
    if isinstance(value, str):
        return usv(value)
    if isinstance(value, list | dict) and depth >= MAX_DEPTH:
        raise ValueError(f"the request nests lists or objects deeper than {MAX_DEPTH} levels")
    if isinstance(value, list):
        return [repaired(v, depth + 1) for v in value]
    if isinstance(value, dict):
        return {usv(k) if isinstance(k, str) else k: repaired(v, depth + 1) for k, v in value.items()}
    return value


def usv(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return text
