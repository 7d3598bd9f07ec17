"""Incremental, UTF-8-safe detokenization.

Decoding one token at a time breaks characters that span several byte-level tokens (most Chinese
characters and emoji) into U+FFFD. Like vLLM, we decode a short window of recent ids twice (with
and without the newest ones) and release the difference only once it no longer ends in an
incomplete character. A few prompt ids seed the window so decoders that strip a leading space
(SentencePiece) see the same context as a full decode. `finish()` releases what the window still
holds back, computed the same way, so it lines up with what was already sent: for byte-level
tokenizers the concatenated deltas equal `tokenizer.decode(generated_ids)`.
"""

from __future__ import annotations

from streamchat.engine.contracts import Tokenizer

_CONTEXT_IDS = 6
_REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Turns a growing list of token ids into text deltas."""

    def __init__(self, tokenizer: Tokenizer, prompt_ids: list[int]) -> None:
        self._tok = tokenizer
        self._context = self._clean_context(prompt_ids[-_CONTEXT_IDS:])
        self._ids: list[int] = list(self._context)
        self._prefix_offset = 0
        self._read_offset = len(self._ids)

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
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        if len(new_text) <= len(prefix_text) or new_text.endswith(_REPLACEMENT):
            return ""
        delta = new_text[len(prefix_text) :]
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        return delta

    def finish(self) -> str:
        """Release the text still held back (it ended in an incomplete character when last decoded).

        The tail is the window's difference, as in `add`, so it continues exactly where the sent
        text stopped (a decode of the answer alone may differ, e.g. in a leading space). Bytes of a
        character the answer never finished (it was cut by a length limit) are not text: the
        U+FFFD they decode to is left out rather than invented.
        """
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        rest = new_text[len(prefix_text) :] if len(new_text) > len(prefix_text) else ""
        self._prefix_offset = self._read_offset = len(self._ids)  # a second call releases nothing
        return rest.rstrip(_REPLACEMENT)
