"""Forward passes of a transformers causal LM over rows of a `RowKVCache`.

One method serves prefill (many tokens per row) and decode (one token per row): rows are
right-padded to the longest chunk, each row starts at its own position, and an explicit 4-D mask
(which transformers passes through untouched) keeps every row causal and inside its own length.
Only the last real position of each row goes through the LM head.
"""

from __future__ import annotations

import inspect

import torch

from streamchat.engine.transformers.exact_attention import CACHE_DTYPE, use_exact_attention
from streamchat.engine.transformers.row_cache import RowKVCache


class TransformersRunner:
    """No per-row chunk limit and no prefix reuse: every prompt is prefilled in full."""

    max_row_chunk: int | None = None
    prefixes: None = None
    prefill_plan: None = None

    def __init__(self, model: torch.nn.Module) -> None:
        cfg = model.config.get_text_config()
        heads = cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        param = next(model.parameters())
        self.device = param.device
        cache_dtype = param.dtype
        if self.device.type == "cpu":  # batch-independent results (see exact_attention.py)
            use_exact_attention(model)
            cache_dtype = CACHE_DTYPE
        self.cache = RowKVCache(cfg.num_hidden_layers, kv_heads, head_dim, cache_dtype, param.device)
        self.vocab_size = cfg.vocab_size
        self._base = model.base_model
        self._head = model.get_output_embeddings()
        params = inspect.signature(self._base.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    @torch.no_grad()
    def forward(self, first_row: int, chunks: list[list[int]], starts: list[int]) -> torch.Tensor:
        """Feed `chunks[i]` to row `first_row+i` from position `starts[i]`; logits: [rows, vocab]."""
        b = len(chunks)
        lens = [len(c) for c in chunks]
        q = max(lens)
        ids = torch.zeros(b, q, dtype=torch.long)
        for i, c in enumerate(chunks):
            ids[i, : len(c)] = torch.tensor(c, dtype=torch.long)
        start = torch.tensor(starts, dtype=torch.long).unsqueeze(1)  # [b, 1]
        positions = start + torch.arange(q).unsqueeze(0)  # [b, q]
        read_len = max(s + n for s, n in zip(starts, lens, strict=True))
        self.cache.reserve(first_row + b, read_len)
        self.cache.plan(first_row, positions, read_len)
        # mask: [b, 1, q, read_len], True where a query may attend
        mask = torch.arange(read_len).view(1, 1, 1, -1) <= positions.view(b, 1, q, 1)
        out = self._base(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            use_cache=True,
            **{self._cache_kw: self.cache},
        )
        hidden = out.last_hidden_state  # [b, q, hidden]
        last = torch.tensor([n - 1 for n in lens], device=hidden.device)
        return self._head(hidden[torch.arange(b, device=hidden.device), last]).float()  # [b, vocab]
