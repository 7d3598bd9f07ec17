"""Incremental, UTF-8-safe detokenization.

Decoding one token at a time breaks characters that span several byte-level tokens (most Chinese
characters and emoji) into U+FFFD. Like vLLM, we decode a short window of recent ids twice (with
and without the newest ones) and release the difference only once it no longer ends in an
incomplete character. A few prompt ids seed the window so decoders that strip a leading space
(SentencePiece) see the same context as a full decode. `finish()` reconciles with a decode of
all ids, so the concatenated deltas always equal `tokenizer.decode(generated_ids)`.
"""

from __future__ import annotations

import logging
from typing import Protocol

log = logging.getLogger(__name__)

_CONTEXT_IDS = 6
_REPLACEMENT = "\ufffd"


class Decoder(Protocol):
    def decode(self, ids: list[int], skip_special_tokens: bool = ...) -> str: ...


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas."""

    def __init__(self, tokenizer: Decoder, prompt_ids: list[int]) -> None:
        self._tok = tokenizer
        self._context = self._clean_context(prompt_ids[-_CONTEXT_IDS:])
        self._ids: list[int] = list(self._context)
        self._prefix_offset = 0
        self._read_offset = len(self._ids)
        self.generated: list[int] = []
        self.emitted = ""

    def _clean_context(self, ids: list[int]) -> list[int]:
        """Context must end on a character boundary: a prompt that ends inside a character would
        otherwise lend its bytes to the answer's first token, which a decode of the answer alone
        does not see."""
        ids = list(ids)
        if ids and self._decode(ids).endswith(_REPLACEMENT):
            return []
        return ids

    def _decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)

    def add(self, token_id: int) -> str:
        """Append one id; return the text it completes (possibly empty)."""
        self._ids.append(token_id)
        self.generated.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        if len(new_text) <= len(prefix_text) or new_text.endswith(_REPLACEMENT):
            return ""
        delta = new_text[len(prefix_text) :]
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        self.emitted += delta
        return delta

    def finish(self) -> str:
        """Return whatever the full decode has that the deltas have not yet given."""
        full = self._decode(self.generated)
        if full.startswith(self.emitted):
            rest = full[len(self.emitted) :]
        else:  # a decoder whose windows disagree with the whole; what was sent cannot be taken back
            log.warning("incremental decode diverged from the full decode; sending only the missing tail")
            rest = full[len(self.emitted) :] if len(full) > len(self.emitted) else ""
        self.emitted += rest
        return rest
