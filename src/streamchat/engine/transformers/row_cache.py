"""A KV cache of rows, one row per running sequence, that any transformers decoder can write to.

Layout per layer: keys and values `[rows, kv_heads, capacity, head_dim]`. Running sequences occupy
rows `0..n` contiguously (a finished row is filled by moving the last row into it), so a decode
step reads a plain view `[:n, :, :max_len]` with no gather. Each row has its own length: the
model writes new keys at per-row positions and a 4-D mask hides what a row has not written.
Both dimensions grow on demand, so an idle server holds almost nothing. Every growth copies the
whole cache, so rows grow geometrically (doubling, within `max_rows` and the token budget): when
requests arrive one by one, 64 rows cost three copies instead of seven.

transformers' attention modules call `cache.update(key, value, layer_idx, ...)`; `plan()` tells
the cache, before each forward, which rows and positions that call writes and how much it reads.
"""

from __future__ import annotations

import torch

from streamchat.engine.memory import round_up

_ROW_STEP = 8
_LEN_STEP = 128  # 256 held 2.5x what 64-token answers use, and every row paid for it


class RowKVCache:
    def __init__(self, num_layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype, device: torch.device):
        self.num_layers, self.kv_heads, self.head_dim = num_layers, kv_heads, head_dim
        self.dtype, self.device = dtype, device
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.rows = 0
        self.capacity = 0
        self._row_slice = slice(0, 0)
        self._row_index = torch.zeros(0, 1, dtype=torch.long)
        self._positions = torch.zeros(0, 0, dtype=torch.long)
        self._read_len = 0
        self.max_rows: int | None = None  # rows never needed beyond these (max_num_seqs)
        self.max_tokens: int | None = None  # and rows x capacity never beyond the token budget

    def limit(self, max_rows: int, max_tokens: int) -> None:
        """Growth stops at the scheduler's limits (geometric growth must not overshoot them)."""
        self.max_rows, self.max_tokens = max_rows, max_tokens

    @property
    def bytes_per_token(self) -> int:
        return 2 * self.num_layers * self.kv_heads * self.head_dim * torch.finfo(self.dtype).bits // 8

    def reserve(self, rows: int, length: int) -> None:
        """Make room for `rows` rows of `length` tokens, keeping what is stored."""
        new_rows = max(self.rows, round_up(rows, _ROW_STEP))
        new_cap = max(self.capacity, round_up(length, _LEN_STEP))
        if new_rows == self.rows and new_cap == self.capacity:
            return
        if new_rows > self.rows:  # double, as far as the limits allow, to copy less often
            room = 2 * self.rows
            if self.max_rows is not None:
                room = min(room, round_up(self.max_rows, _ROW_STEP))
            if self.max_tokens is not None:
                room = min(room, self.max_tokens // new_cap // _ROW_STEP * _ROW_STEP)
            new_rows = max(new_rows, room)
        shape = (new_rows, self.kv_heads, new_cap, self.head_dim)
        for store in (self.keys, self.values):
            for i in range(self.num_layers):
                grown = torch.zeros(shape, dtype=self.dtype, device=self.device)
                if store and i < len(store):
                    grown[: self.rows, :, : self.capacity] = store[i]
                    store[i] = grown
                else:
                    store.append(grown)
        self.rows, self.capacity = new_rows, new_cap

    def release(self) -> None:
        """Drop all memory (called when the server goes idle)."""
        self.keys, self.values = [], []
        self.rows = self.capacity = 0
        if self.device.type == "cuda":  # hand memory back to other processes, as the seed's torch_gc does
            torch.cuda.empty_cache()
            torch.cuda.ipc_collect()

    def move_row(self, src: int, dst: int) -> None:
        self.reserve(max(src, dst) + 1, self.capacity)
        for store in (self.keys, self.values):
            for t in store:
                t[dst] = t[src]

    def swap_rows(self, a: int, b: int) -> None:
        self.reserve(max(a, b) + 1, self.capacity)
        for store in (self.keys, self.values):
            for t in store:
                t[[a, b]] = t[[b, a]]

    def plan(self, first_row: int, positions: torch.Tensor, read_len: int) -> None:
        """Next forward writes rows `first_row..first_row+b` at `positions` [b, q], reads `read_len`."""
        b = positions.shape[0]
        self._row_slice = slice(first_row, first_row + b)
        self._row_index = torch.arange(b, device=self.device).unsqueeze(1)  # [b, 1]
        self._positions = positions.to(self.device)
        self._read_len = read_len

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        """key, value: [b, kv_heads, q, head_dim] → the rows' whole readable cache."""
        k = self.keys[layer_idx][self._row_slice]  # [b, kv_heads, capacity, head_dim]
        v = self.values[layer_idx][self._row_slice]
        k[self._row_index, :, self._positions] = key.transpose(1, 2).to(self.dtype)
        v[self._row_index, :, self._positions] = value.transpose(1, 2).to(self.dtype)
        return k[:, :, : self._read_len], v[:, :, : self._read_len]

    # Methods transformers may call on any cache; ours answers for the planned rows.
    def get_seq_length(self, layer_idx: int = 0) -> int:  # noqa: ARG002  every planned layer reads as far
        return self._read_len

    def __len__(self) -> int:
        return self.num_layers
