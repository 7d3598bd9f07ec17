"""Loading a GGUF for the llama.cpp engine: llama.cpp's weights plus a transformers tokenizer.

llama.cpp runs the model, but the rest of the server (chat templates, incremental detokenizing,
`/v1/completions` encoding) speaks the transformers tokenizer interface. The GGUF carries its
tokenizer and chat template, and transformers can rebuild a tokenizer from it; that takes a few
seconds, so the first start saves it to a cache folder keyed by the file's identity and later
starts load that folder directly.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from streamchat.engine.loader import ModelNotFoundError, resolve_model

log = logging.getLogger(__name__)


@dataclass
class LoadedGGUF:
    model: object  # LlamaModel; typed loosely so importing this module never needs llama_cpp
    tokenizer: object
    name: str
    max_model_len: int
    eos_token_ids: set[int]


def gguf_path(spec: str | None) -> tuple[str, Path] | None:
    """(name, path) when `spec` (or the embedded default) is a local `.gguf` file, else None."""
    name, path = resolve_model(spec)
    if path is not None and path.is_file() and path.suffix == ".gguf":
        return name, path
    return None


def load_gguf(spec: str | None, cache_dir: Path, max_model_len: int | None, verbose: bool = False) -> LoadedGGUF:
    from streamchat.engine.llamacpp_runner import LlamaModel

    found = gguf_path(spec)
    if found is None:
        raise ModelNotFoundError(f"engine=llamacpp needs a .gguf model file, not '{spec}'")
    name, path = found
    tokenizer = gguf_tokenizer(path, cache_dir)
    model = LlamaModel(path, verbose=verbose)
    native = model.n_ctx_train or 2048
    limit = min(native, max_model_len) if max_model_len else native
    eos = model.eog_token_ids()
    if isinstance(getattr(tokenizer, "eos_token_id", None), int):
        eos.add(tokenizer.eos_token_id)
    return LoadedGGUF(model, tokenizer, name, limit, eos)


def gguf_tokenizer(path: Path, cache_dir: Path) -> object:
    """The GGUF's tokenizer as a transformers tokenizer, rebuilt once and then read from the cache."""
    from transformers import AutoTokenizer

    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    folder = cache_dir / "gguf-tokenizer" / f"{path.stem}-{key}"
    if (folder / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(folder)
    log.info("reading the tokenizer of %s (first start only)", path.name)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))  # one per process
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(folder)  # appears whole or not at all
    except OSError:  # another process saved the same tokenizer first
        shutil.rmtree(tmp, ignore_errors=True)
    return tokenizer
