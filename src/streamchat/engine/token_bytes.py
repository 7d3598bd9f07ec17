"""The exact bytes each token stands for, for logprobs.

A token may hold part of a character (most Chinese characters and emoji span two or three
byte-level tokens); decoding it alone gives U+FFFD, which tells a client nothing. OpenAI's
logprobs carry each token's own `bytes`, so that joining them gives the answer's UTF-8, and name
a token that is not valid UTF-8 on its own `bytes:\\xe6\\x97`. We read the bytes off the token's
vocabulary entry: the byte-level alphabet of GPT-2-style tokenizers, or SentencePiece's
`<0xNN>` byte-fallback pieces; special tokens, which answers leave out, stand for no bytes.
"""

from __future__ import annotations

import re
from functools import lru_cache

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_SENTENCEPIECE_SPACE = "\u2581"


@lru_cache(maxsize=1)
def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's reversible map from printable characters back to the bytes they stand for."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {b: b for b in printable}, 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return {chr(c): b for b, c in chars.items()}


class TokenBytes:
    """`token_bytes(id)` → the bytes token `id` adds to an answer; `display(data)` → its logprob name."""

    def __init__(self, tokenizer: object) -> None:
        self._tok = tokenizer
        self._special = set(getattr(tokenizer, "all_special_ids", ()) or ())
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        self._byte_level = type(decoder).__name__ == "ByteLevel"
        self._cache: dict[int, bytes] = {}

    def __call__(self, token_id: int) -> bytes:
        data = self._cache.get(token_id)
        if data is None:
            data = self._cache[token_id] = self._bytes_of(token_id)
        return data

    def name(self, token_id: int) -> str:
        """How logprobs name the token: its text, the special token's own name, or `bytes:\\x..`."""
        if token_id in self._special:
            return self._piece(token_id)
        return display(self(token_id))

    def _bytes_of(self, token_id: int) -> bytes:
        if token_id in self._special:
            return b""
        piece = self._piece(token_id)
        if self._byte_level:
            alphabet = _byte_level_alphabet()
            if all(c in alphabet for c in piece):
                return bytes(alphabet[c] for c in piece)
        byte = _BYTE_PIECE.fullmatch(piece)
        if byte:
            return bytes([int(byte.group(1), 16)])
        if _SENTENCEPIECE_SPACE in piece:
            return piece.replace(_SENTENCEPIECE_SPACE, " ").encode()
        return self._tok.decode([token_id], skip_special_tokens=False).encode()  # type: ignore[attr-defined]

    def _piece(self, token_id: int) -> str:
        convert = getattr(self._tok, "convert_ids_to_tokens", None)
        piece = convert(token_id) if convert is not None else None
        if not isinstance(piece, str):
            return self._tok.decode([token_id], skip_special_tokens=False)  # type: ignore[attr-defined]
        return piece


def display(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in data)
