"""Server-Sent Events framing, per the WHATWG HTML standard, in one pure module.

Every byte a stream sends is built here and nowhere else. Lines end in `\\n`; a `data` value with
line breaks (`\\r\\n`, `\\r` or `\\n`) becomes several `data:` lines, which a conforming parser
joins back with `\\n`. Keep-alive comments are sent *without* a blank line after them: the official
`openai` Python SDK treats a comment followed by a blank line as an event with empty data and
fails to parse it.
"""

from __future__ import annotations

import json
import re

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
DONE = "[DONE]"


def _clean(field: str) -> str:
    """id and event values cannot hold line breaks (or NUL, for ids); drop them."""
    return _LINE_BREAK.sub("", field).replace("\0", "")


def encode_event(data: str, *, event: str | None = None, id: str | None = None, retry: int | None = None) -> bytes:
    lines = []
    if id is not None:
        lines.append(f"id: {_clean(id)}")
    if event is not None:
        lines.append(f"event: {_clean(event)}")
    if retry is not None:
        lines.append(f"retry: {int(retry)}")
    lines.extend(f"data: {chunk}" for chunk in _LINE_BREAK.split(data))
    return _utf8("\n".join(lines) + "\n\n")


def _utf8(text: str) -> bytes:
    """UTF-8 cannot carry lone surrogates (JSON's `"\\ud800"` makes one): they become U+FFFD, and a
    surrogate pair becomes the character it stands for, as a browser's USVString conversion does."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace").encode("utf-8")


def to_json(obj: object, compact: bool = True) -> str:
    seps = (",", ":") if compact else (", ", ": ")
    return json.dumps(obj, ensure_ascii=False, separators=seps)


def comment(text: str = "ping") -> bytes:
    """A keep-alive line; no blank line follows (see the module docstring)."""
    return _utf8("".join(f": {line}\n" for line in _LINE_BREAK.split(text)))
