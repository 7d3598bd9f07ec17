"""Attention whose result for a token does not depend on what else is in the batch (CPU).

Why: a batch is padded to its longest row, so the same token's attention reduces over a different
number of (masked) positions alone than next to a long neighbour, and PyTorch's fused kernels
block that reduction differently: the float32 result moves by an ulp or so. With linear layers
that round their inputs to bf16 (bf16_linear.py) such an ulp is sometimes amplified to a different
greedy token. Here the products and sums run in float64 over a float64 cache and are rounded to
float32 once at the end, so the padding's exact zeros leave the float32 result unchanged.
The cost is small on a CPU: attention is a few percent of a decode step's arithmetic.
"""

from __future__ import annotations

import torch
from torch import nn

NAME = "streamchat_exact"
CACHE_DTYPE = torch.float64


def exact_attention(
    module: nn.Module,  # noqa: ARG001  transformers' attention interface passes it
    query: torch.Tensor,  # [b, heads, q, d]
    key: torch.Tensor,  # [b, kv_heads, L, d]
    value: torch.Tensor,  # [b, kv_heads, L, d]
    attention_mask: torch.Tensor | None,  # [b, 1, q, L], True (or 0.0) where a query may attend
    dropout: float = 0.0,  # noqa: ARG001  inference: no dropout
    scaling: float | None = None,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    b, heads, q, d = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    groups = heads // kv_heads  # query heads sharing one key/value head, grouped without copying K/V
    scale = scaling if scaling is not None else d**-0.5
    key, value = key.to(CACHE_DTYPE), value.to(CACHE_DTYPE)  # no copy when read from a float64 cache
    qq = query.to(CACHE_DTYPE).reshape(b, kv_heads, groups * q, d)
    scores = (qq @ key.transpose(-1, -2)).mul_(scale).view(b, kv_heads, groups, q, length)
    if attention_mask is None:  # plain causal: query i sees the keys up to its own position
        attention_mask = torch.ones(q, length, dtype=torch.bool, device=query.device).tril(length - q)[None, None]
    mask = attention_mask[:, :, -q:, -length:].unsqueeze(1)  # [b, 1, 1, q, L]
    if mask.dtype == torch.bool:
        scores.masked_fill_(~mask, float("-inf"))
    else:
        scores.add_(mask.to(scores.dtype))
    probs = scores.softmax(dim=-1).view(b, kv_heads, groups * q, length)
    out = (probs @ value).view(b, heads, q, d).to(query.dtype)
    return out.transpose(1, 2).contiguous(), None  # [b, q, heads, d], as transformers expects


def use_exact_attention(model: nn.Module) -> None:
    """Register and switch `model` to `exact_attention`; a 4-D mask the caller gives is used as given."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(NAME, exact_attention)
    AttentionMaskInterface.register(NAME, eager_mask)
    model.set_attn_implementation(NAME)
