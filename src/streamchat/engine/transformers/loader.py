"""Loading a model for the transformers engine: a local folder, a hub id, or a GGUF file.

transformers dequantises a GGUF on every load (~20 s here), so the first load writes the converted
weights, config and tokenizer to a cache folder (`model_files.derived_folder`) and later starts load
that folder in about a second.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from streamchat.engine.model_files import (
    ModelNotFoundError,
    derived_folder,
    gguf_metadata,
    resolve_model,
    transformers_reads_gguf,
)
from streamchat.engine.sampling_defaults import from_generation_config, from_gguf
from streamchat.engine.transformers.bf16_linear import convert_linears, cpu_has_native_bf16
from streamchat.engine.turn_ends import listed_eos_ids, turn_end_ids

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    name: str
    max_model_len: int
    eos_token_ids: set[int]
    sampling_defaults: dict[str, float]  # what the model's files say (generation_config, GGUF metadata)


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda was asked for but no CUDA device is available")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """fp32 on CPU: without AVX512-BF16, bf16 matmuls are slower there for batched decode."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, dtype)


def use_bf16_linears(linear_dtype: str, device: torch.device, dtype: torch.dtype) -> bool:
    """bf16 products only for a float32 model on a CPU (see bf16_linear.py); `auto` asks the CPU."""
    if device.type != "cpu" or dtype != torch.float32 or linear_dtype == "float32":
        return False
    return linear_dtype == "bfloat16" or cpu_has_native_bf16()


def load_transformers(
    spec: str | None,
    device: str,
    dtype: str,
    cache_dir: Path,
    max_model_len: int | None,
    linear_dtype: str = "float32",
    trust_remote_code: bool = False,
) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name, path = resolve_model(spec)
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    started = time.monotonic()
    if path is not None and path.suffix == ".gguf":
        folder = _converted_gguf(path, cache_dir)
    else:
        folder = str(path) if path is not None else name
    log.info("loading %s from %s (%s, %s)", name, folder, dev, dt)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dt, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise ModelNotFoundError(f"cannot load model '{spec}': {exc}") from exc
    model.to(dev).eval()
    if use_bf16_linears(linear_dtype, dev, dt):
        log.info("linear layers multiply in bfloat16 (%d layers); the rest stays float32", convert_linears(model))
    log.info("model ready in %.1f s", time.monotonic() - started)
    defaults = from_generation_config(getattr(model, "generation_config", None))
    if path is not None and path.suffix == ".gguf":
        defaults = {**defaults, **from_gguf(path)}
    return LoadedModel(model, tokenizer, name, _context_len(model, max_model_len), _eos_ids(model, tokenizer), defaults)


def _converted_gguf(path: Path, cache_dir: Path) -> str:
    """Dequantise a GGUF once into a plain transformers folder and reuse it afterwards."""

    def convert(folder: Path) -> None:
        from safetensors.torch import save_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        _check_transformers_reads(path)
        log.info("converting %s to fp32 weights (first start only, ~20 s)", path.name)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        model.config.save_pretrained(folder)
        model.generation_config.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        save_model(model, str(folder / "model.safetensors"))

    return str(derived_folder(path, cache_dir, "gguf", "model.safetensors", convert))


def _check_transformers_reads(path: Path) -> None:
    """Refuse a GGUF whose architecture transformers cannot read, naming the engine that can.

    transformers rebuilds only the architectures it maps (llama, qwen2…); GLM's `glm4` and
    `chatglm` GGUFs run on llama.cpp only, and transformers' own "not supported yet" names no way out.
    """
    arch = gguf_metadata(path).get("general.architecture")
    if not transformers_reads_gguf(arch):
        raise ModelNotFoundError(
            f"transformers cannot read the '{arch}' architecture of {path.name}: serve it with "
            "--engine llamacpp (what --engine auto picks for a GGUF), or give --model the original model folder"
        )


def _context_len(model: torch.nn.Module, limit: int | None) -> int:
    cfg = model.config.get_text_config()
    native = getattr(cfg, "max_position_embeddings", None) or 2048
    return min(native, limit) if limit else native


def _eos_ids(model: torch.nn.Module, tokenizer: object) -> set[int]:
    """Every EOS the generation config lists, the tokenizer's, and GLM's turn tokens (turn_ends.py)."""
    return listed_eos_ids(getattr(model, "generation_config", None), tokenizer) | turn_end_ids(tokenizer)
