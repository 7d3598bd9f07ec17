"""bf16 products for CPU linear layers: close to float32, and each row independent of its batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from streamchat.engine.transformers.bf16_linear import BF16Linear, convert_linears, cpu_has_native_bf16
from streamchat.engine.transformers.loader import LoadedModel, use_bf16_linears


def test_product_is_close_to_float32_with_and_without_bias() -> None:
    torch.manual_seed(0)
    for bias in (False, True):
        lin = nn.Linear(1536, 96, bias=bias)
        x = torch.randn(5, 7, 1536)
        got, want = BF16Linear(lin)(x), lin(x)
        assert got.shape == want.shape and got.dtype == torch.float32
        assert (got - want).abs().max() < 0.02 * want.abs().max()


def test_each_row_is_the_same_alone_and_in_any_batch(loaded: LoadedModel) -> None:
    """The model's own down projection (a 1536-long reduction) — unchunked, oneDNN rounds rows of
    a batch differently from the same row alone, which changed greedy answers."""
    down = loaded.model.get_submodule("model.layers.7.mlp.down_proj")
    assert isinstance(down, BF16Linear)
    torch.manual_seed(0)
    for scale in (1.0, 4.0):
        x = torch.randn(64, down.in_features) * scale
        alone = torch.cat([down(x[i : i + 1]) for i in range(64)])
        for rows in (2, 5, 16, 33, 64):
            assert torch.equal(down(x[:rows]), alone[:rows]), f"rows={rows} scale={scale}"


def test_convert_replaces_every_linear_including_the_head() -> None:
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Sequential(nn.Linear(8, 4)))
    assert convert_linears(model) == 2
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert model(torch.randn(3, 8)).shape == (3, 4)


def test_cpu_flags_decide_auto(tmp_path: Path) -> None:
    with_bf16, without = tmp_path / "a", tmp_path / "b"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512_bf16\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f\n")
    assert cpu_has_native_bf16(str(with_bf16))
    assert not cpu_has_native_bf16(str(without))
    assert not cpu_has_native_bf16(str(tmp_path / "missing"))


@pytest.mark.parametrize(
    ("setting", "device", "dtype", "expected"),
    [
        ("float32", "cpu", torch.float32, False),
        ("bfloat16", "cpu", torch.float32, True),
        ("bfloat16", "cpu", torch.bfloat16, False),  # a bf16 model multiplies in bf16 anyway
        ("bfloat16", "cuda", torch.float32, False),  # GPUs: --dtype decides
        ("auto", "cpu", torch.float32, cpu_has_native_bf16()),
    ],
)
def test_when_linears_multiply_in_bf16(setting: str, device: str, dtype: torch.dtype, expected: bool) -> None:
    assert use_bf16_linears(setting, torch.device(device), dtype) is expected


def test_a_shared_input_is_cast_once_but_an_input_changed_in_place_is_cast_again() -> None:
    torch.manual_seed(0)
    a, b = nn.Linear(16, 8, bias=False), nn.Linear(16, 8, bias=False)
    fa, fb = BF16Linear(a), BF16Linear(b)
    x = torch.randn(3, 16)
    torch.testing.assert_close(fb(x), b(x), rtol=0.02, atol=0.02)  # a different layer reusing x's cast
    first = fa(x)
    x.mul_(2)  # same tensor object, new values
    torch.testing.assert_close(fa(x), 2 * first, rtol=0.02, atol=0.02)
