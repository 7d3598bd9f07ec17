"""Linear layers that multiply in bfloat16 while the rest of a float32 model stays float32.

Why: a batched decode step on a CPU is bound by the linear layers' matrix products. Where the CPU
has native bf16 dot products (AVX512-BF16, AMX) those run 3-4x faster than float32 ones, while
RMSNorm, rotary embeddings, attention and the residual stream are faster and more exact left in
float32; casting the whole model to bf16 loses on both counts. The products still accumulate in
float32, so the logits stay close to float32's: on the embedded model the mean KL divergence to
float32 is ~6e-4, five times below what llama.cpp's Q4_1 kernels show on the same weights
(`python -m bench.linear_precision`).
"""

from __future__ import annotations

import torch
from torch import nn

_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


class BF16Linear(nn.Module):
    """`y = x @ W.T + b` with W kept in bf16; x is cast on the way in, y cast back to x's dtype.

    oneDNN splits a reduction longer than ~1k differently depending on how many rows the product
    has, so a row's result would depend on its batch. Long reductions are therefore cut here into
    equal chunks of at most `MAX_REDUCTION` and summed in a fixed order: each token then gets the
    same numbers alone or in a full batch, as a greedy answer must.
    """

    MAX_REDUCTION = 768

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().to(torch.bfloat16)
        n_chunks = -(-self.in_features // self.MAX_REDUCTION)
        self.chunk = -(-self.in_features // n_chunks)
        self.weights = [w.contiguous() for w in weight.split(self.chunk, dim=1)]
        self.bias = linear.bias.detach() if linear.bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xb = _as_bf16(x)
        y = nn.functional.linear(xb[..., : self.chunk], self.weights[0]).to(x.dtype)
        for i, w in enumerate(self.weights[1:], start=1):
            y = y + nn.functional.linear(xb[..., i * self.chunk : (i + 1) * self.chunk], w).to(x.dtype)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bf16 products"


class _LastCast:
    """The bf16 copy of the last input: q/k/v (and gate/up) projections read the same tensor."""

    source: torch.Tensor | None = None
    version = -1
    cast: torch.Tensor | None = None


def _as_bf16(x: torch.Tensor) -> torch.Tensor:
    if x.is_inference():  # no version counter to tell an in-place change: cast every time
        return x.to(torch.bfloat16)
    last = _LastCast
    if last.source is x and last.version == x._version:  # same tensor, not modified in place since
        return last.cast  # type: ignore[return-value]
    last.source, last.version, last.cast = x, x._version, x.to(torch.bfloat16)
    return last.cast


def convert_linears(model: nn.Module) -> int:
    """Replace every `nn.Linear` in `model` (LM head included) by `BF16Linear`; return how many.

    A head tied to the input embeddings keeps the embedding table in float32 for lookups and gets
    its own bf16 copy for the product.
    """
    targets = [(name, mod) for name, mod in model.named_modules() if isinstance(mod, nn.Linear)]
    for name, mod in targets:
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, BF16Linear(mod))
    return len(targets)


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU multiplies bf16 in hardware; elsewhere bf16 products are emulated (slower)."""
    try:
        with open(cpuinfo) as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return any(flag in flags for flag in _BF16_CPU_FLAGS)
    except OSError:
        pass
    return False
