"""Float64 attention: same numbers as PyTorch's, and a token's result independent of padding and batch."""

from __future__ import annotations

import torch
from torch import nn

from streamchat.engine.transformers.exact_attention import exact_attention


def _inputs(rows: int, length: int, q: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(rows, 9, q, 64, generator=g)
    key = torch.randn(rows, 3, length, 64, generator=g, dtype=torch.float64)
    value = torch.randn(rows, 3, length, 64, generator=g, dtype=torch.float64)
    return query, key, value


def _mask(rows: int, q: int, length: int, used: int) -> torch.Tensor:
    """Causal over the first `used` positions, the rest padding."""
    pos = torch.arange(used - q, used).view(1, 1, q, 1)
    return (torch.arange(length).view(1, 1, 1, -1) <= pos).expand(rows, 1, q, length)


def test_matches_pytorch_attention_with_grouped_heads() -> None:
    query, key, value = _inputs(2, 40, 5)
    mask = _mask(2, 5, 40, 33)
    out, _ = exact_attention(nn.Module(), query, key, value, mask, scaling=0.125)
    ref = nn.functional.scaled_dot_product_attention(
        query, key.float().repeat_interleave(3, 1), value.float().repeat_interleave(3, 1), attn_mask=mask, scale=0.125
    ).transpose(1, 2)
    assert out.shape == (2, 5, 9, 64) and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_a_token_gets_the_same_bits_whatever_padding_and_neighbours() -> None:
    used = 95
    query, key, value = _inputs(1, 600, 1)
    alone, _ = exact_attention(nn.Module(), query, key[:, :, :used], value[:, :, :used], _mask(1, 1, used, used))
    for length in (used + 1, used + 17, 600):  # a longer neighbour pads the batch to its length
        padded, _ = exact_attention(
            nn.Module(), query, key[:, :, :length], value[:, :, :length], _mask(1, 1, length, used)
        )
        assert torch.equal(padded, alone), length
    batch_q, batch_k, batch_v = _inputs(16, 600, 1, seed=1)
    batch_q[3], batch_k[3], batch_v[3] = query[0], key[0], value[0]
    mask = _mask(16, 1, 600, 600).clone()
    mask[3] = _mask(1, 1, 600, used)[0]
    together, _ = exact_attention(nn.Module(), batch_q, batch_k, batch_v, mask)
    assert torch.equal(together[3:4], alone)


def test_without_a_mask_it_is_causal() -> None:
    """Callers that give no mask (transformers' own generate may not) still get causal attention."""
    query, key, value = _inputs(1, 12, 12)
    out, _ = exact_attention(nn.Module(), query, key, value, None)
    ref = nn.functional.scaled_dot_product_attention(
        query, key.float().repeat_interleave(3, 1), value.float().repeat_interleave(3, 1), is_causal=True
    ).transpose(1, 2)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
