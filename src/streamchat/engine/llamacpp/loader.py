"""Loading a GGUF for the llama.cpp engine: llama.cpp's weights plus a transformers tokenizer.

llama.cpp runs the model, but the rest of the server (chat templates, incremental detokenizing,
`/v1/completions` encoding) speaks the transformers tokenizer interface. The GGUF carries its
tokenizer and chat template, and transformers can rebuild a tokenizer from it; that takes a few
seconds, so the first start saves it to a cache folder keyed by the file's identity and later
starts load that folder directly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from streamchat.engine.llamacpp.tokenizer import tokenizer_from_gguf
from streamchat.engine.model_files import ModelNotFoundError, derived_folder, gguf_metadata, gguf_path
from streamchat.engine.sampling_defaults import from_gguf
from streamchat.engine.turn_ends import listed_eos_ids, turn_end_ids

log = logging.getLogger(__name__)


@dataclass
class LoadedGGUF:
    model: object  # LlamaModel; typed loosely so importing this module never needs llama_cpp
    tokenizer: object
    name: str
    max_model_len: int
    eos_token_ids: set[int]
    sampling_defaults: dict[str, float]  # the GGUF's general.sampling.* metadata


def load_gguf(spec: str | None, cache_dir: Path, max_model_len: int | None, verbose: bool = False) -> LoadedGGUF:
    from streamchat.engine.llamacpp.model import LlamaModel

    found = gguf_path(spec)
    if found is None:
        raise ModelNotFoundError(f"engine=llamacpp needs a .gguf model file, not '{spec}'")
    name, path = found
    tokenizer = gguf_tokenizer(path, cache_dir)
    try:
        model = LlamaModel(path, verbose=verbose)
    except RuntimeError as exc:  # llama.cpp logs why only when verbose; name the usual cause
        arch = gguf_metadata(path).get("general.architecture")
        raise RuntimeError(
            f"{exc}: is its architecture '{arch}' newer than the installed llama-cpp-python? "
            "(--log-level debug shows llama.cpp's own reason)"
        ) from exc
    native = model.n_ctx_train or 2048
    limit = min(native, max_model_len) if max_model_len else native
    eos = model.eog_token_ids() | listed_eos_ids(tokenizer) | turn_end_ids(tokenizer)
    return LoadedGGUF(model, tokenizer, name, limit, eos, from_gguf(path))


def gguf_tokenizer(path: Path, cache_dir: Path) -> object:
    """The GGUF's tokenizer as a transformers tokenizer, rebuilt once and then read from the cache."""
    from transformers import AutoTokenizer

    def rebuild(folder: Path) -> None:
        log.info("reading the tokenizer of %s (first start only)", path.name)
        tokenizer_from_gguf(path).save_pretrained(folder)

    folder = derived_folder(path, cache_dir, "gguf-tokenizer", "tokenizer_config.json", rebuild)
    return AutoTokenizer.from_pretrained(folder)
