"""Answers stay valid UTF-8: a token that would break a character is never picked.

Byte-level vocabularies hold tokens that are parts of a character (a lone continuation byte, the
first two bytes of a three-byte character). A model may pick one where it cannot fit, above all
under a repetition penalty that pushes it off the tokens it just used, and the text then holds
U+FFFD: a garbled Chinese answer. The guard follows each answer's UTF-8 state (which bytes the
next one may be, as RFC 3629's table says) and, when a row's pick would break it, that row is
picked again among the tokens that fit. Picks that fit (nearly all) cost one dictionary lookup;
the per-state masks are built the first time a state needs one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

START = 0  # between characters
# state → (lowest, highest allowed next byte, state after it); states 1-3 owe 1-3 continuation bytes.
_CONTINUE: dict[int, tuple[int, int, int]] = {
    1: (0x80, 0xBF, START),
    2: (0x80, 0xBF, 1),
    3: (0x80, 0xBF, 2),
    4: (0xA0, 0xBF, 1),  # after E0: no overlong three-byte forms
    5: (0x80, 0x9F, 1),  # after ED: no surrogates
    6: (0x90, 0xBF, 2),  # after F0: no overlong four-byte forms
    7: (0x80, 0x8F, 2),  # after F4: nothing past U+10FFFF
}
_STATES = 8


def _after_lead(byte: int) -> int | None:
    """The state after the first byte of a character, or None for a byte no character starts with."""
    if byte < 0x80:
        return START
    if 0xC2 <= byte <= 0xDF:
        return 1
    if byte == 0xE0:
        return 4
    if byte == 0xED:
        return 5
    if 0xE1 <= byte <= 0xEF:
        return 2
    if byte == 0xF0:
        return 6
    if byte == 0xF4:
        return 7
    if 0xF1 <= byte <= 0xF3:
        return 3
    return None


def advance(state: int, data: bytes) -> int | None:
    """The state after `data`, or None when `data` cannot follow `state` in valid UTF-8."""
    for byte in data:
        if state == START:
            nxt = _after_lead(byte)
        else:
            lo, hi, then = _CONTINUE[state]
            nxt = then if lo <= byte <= hi else None
        if nxt is None:
            return None
        state = nxt
    return state


class Utf8Guard:
    """Per-token UTF-8 transitions over one vocabulary, from each token's bytes."""

    def __init__(self, token_bytes: Callable[[int], bytes], vocab_size: int) -> None:
        self._bytes = token_bytes
        self._vocab_size = vocab_size
        self._after: dict[tuple[int, int], int | None] = {}
        self._masks: dict[tuple[int, int], torch.Tensor] = {}

    def after(self, state: int, token_id: int) -> int | None:
        """The state once `token_id` is appended, or None when it would break a character.
        Special tokens stand for no bytes, so the answer may end (or a stop token come) anywhere."""
        key = (state, token_id)
        if key not in self._after:
            data = self._bytes(token_id) if token_id < self._vocab_size else b""
            self._after[key] = advance(state, data)
        return self._after[key]

    def allowed(self, state: int, width: int) -> torch.Tensor:
        """Bool mask over `width` logits: the tokens that may follow `state`."""
        mask = self._masks.get((state, width))
        if mask is None:
            mask = torch.tensor([self.after(state, t) is not None for t in range(width)], dtype=torch.bool)
            self._masks[(state, width)] = mask
        return mask
