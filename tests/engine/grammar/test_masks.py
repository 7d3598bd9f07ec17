"""`engine/grammar/masks.py`: the bitmask layout, and masks computed beside the engine thread."""

from __future__ import annotations

import torch

from streamchat.engine.grammar.masks import apply_masks


def test_every_bit_of_a_word_maps_to_its_token_including_the_sign_bit() -> None:
    vocab = 70  # three words, the last one partly used
    allowed = {0, 5, 31, 32, 63, 64, 69}
    words = torch.zeros(1, 3, dtype=torch.int32)
    for t in allowed:
        word, bit = divmod(t, 32)
        words[0, word] |= (
            torch.tensor(1 << bit).to(torch.int32) if bit < 31 else torch.tensor(-(2**31), dtype=torch.int32)
        )
    logits = torch.zeros(2, vocab)
    apply_masks(logits, [1], words)
    assert torch.all(logits[0] == 0), "a row without a mask is untouched"
    kept = {i for i in range(vocab) if logits[1, i] == 0}
    assert kept == allowed
    assert all(logits[1, i] == float("-inf") for i in range(vocab) if i not in allowed)


def test_logits_wider_than_the_mask_forbid_the_extra_ids() -> None:
    logits = torch.zeros(1, 40)  # the model's output is padded beyond the tokenizer's 32 ids
    apply_masks(logits, [0], torch.full((1, 1), -1, dtype=torch.int32))
    assert torch.all(logits[0, :32] == 0) and torch.all(logits[0, 32:] == float("-inf"))
