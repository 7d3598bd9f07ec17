"""Attention done as llama.cpp's CPU flash attention does it, for a transformers reference forward.

llama.cpp keeps keys and values in an f16 cache, converts each query to f16 for the K·Q products,
and accumulates the softmax-weighted sum of values in f16 too, with an online softmax over the
cells in order (ggml-cpu `ggml_compute_forward_flash_attn_ext_f16_one_chunk`: `ggml_vec_scale_f16`
when a new maximum appears, `ggml_vec_mad_f16` for each cell). A transformers forward in float32
differs from it by these roundings; one with this attention differs only by float32 summation order.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import repeat_kv

NAME = "llama_cpp_f16"


def _f16(x: torch.Tensor) -> torch.Tensor:
    return x.half().float()


def llama_cpp_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    **_: object,
) -> tuple[torch.Tensor, None]:
    """Causal attention of `query` [b, h, q, d] over `key`/`value`, rounded where llama.cpp rounds."""
    del attention_mask  # causal over one unpadded sequence: the queries are the last q positions
    key, value = repeat_kv(key, module.num_key_value_groups), repeat_kv(value, module.num_key_value_groups)
    q, k, v = _f16(query), _f16(key), _f16(value)
    n_q, n_k = q.shape[-2], k.shape[-2]
    scores = (q @ k.transpose(-1, -2)) * (scaling if scaling is not None else q.shape[-1] ** -0.5)
    causal = torch.ones(n_q, n_k, dtype=torch.bool).tril(n_k - n_q)
    scores = scores.masked_fill(~causal, float("-inf"))
    best = torch.full((*scores.shape[:-1], 1), float("-inf"))
    total = torch.zeros_like(best)
    acc = torch.zeros(*q.shape[:-1], v.shape[-1])  # the f16 accumulator, held as f32 values
    for cell in range(n_k):
        s = scores[..., cell : cell + 1]
        seen = s > float("-inf")
        new_best = seen & (s > best)
        rescale = torch.where(new_best, torch.exp(best - s), torch.ones_like(s))
        best = torch.where(new_best, s, best)
        weight = torch.where(seen, torch.exp(s - best), torch.zeros_like(s))
        acc = torch.where(new_best, _f16(acc * rescale), acc)
        acc = torch.where(seen, _f16(acc + v[:, :, cell : cell + 1, :] * weight), acc)
        total = total * rescale + weight
    return (acc / total).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, llama_cpp_attention)
