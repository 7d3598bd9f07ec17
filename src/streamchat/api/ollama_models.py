"""What Ollama's model routes say about the served model: `/api/tags`, `/api/show`, `/api/ps`.

Ollama reads these from its own store; here they come from the model's files, once per process:
a GGUF's metadata (architecture, parameter count, file type, license), or a transformers folder's
`config.json` (architecture, dtype) and weight files. The `digest` is the SHA-256 of the files'
path, size and modification time: it changes when the files do, as Ollama's does, without reading
gigabytes. The context length shown is the one this server serves (`--max-model-len`), which is
what a client must fit its prompt into, not the model's native one.

With `--models-file`, every model is listed (Ollama lists what it can serve, loaded or not), `/api/ps`
shows the loaded ones and when an idle one unloads, and a request naming one loaded on first use
waits for its load rather than getting a 503 that Ollama's clients would not retry.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streamchat.api.errors import APIError
from streamchat.api.ready import Ready, model_loaded
from streamchat.api.state import ModelInfo, ServerState
from streamchat.engine.model_files import resolve_model

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
_OLLAMA_OPTION = {"repetition_penalty": "repeat_penalty"}  # our sampling default names → Ollama's
NEVER = "9999-12-31T23:59:59Z"  # `/api/ps`: a model without keep_alive is never unloaded
LATEST = ":latest"
LOAD_PATIENCE_S = 600.0  # a model loaded on first use: how long a request waits for it


@dataclass(frozen=True)
class ModelFiles:
    size: int = 0
    digest: str = ""
    modified_at: str = ""
    format: str = ""
    family: str = ""
    parameter_size: str = ""
    quantization_level: str = ""
    license: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)  # scalar metadata, by GGUF key


async def model_files(spec: str | None) -> ModelFiles:
    """Read on a worker thread the first time (a GGUF's header takes a second or two), then cached."""
    return await asyncio.to_thread(_read, spec)


@functools.cache
def _read(spec: str | None) -> ModelFiles:
    name, path = resolve_model(spec)
    if path is None:  # a hub id: the files are in the hub's cache, not ours to describe
        return ModelFiles(digest=hashlib.sha256(name.encode()).hexdigest())
    if path.is_file():
        files = [path]
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    stats = [p.stat() for p in files]
    size = sum(s.st_size for s in stats)
    mtime = max((s.st_mtime for s in stats), default=path.stat().st_mtime)
    key = f"{path.resolve()}|{size}|{max((s.st_mtime_ns for s in stats), default=0)}"
    base = ModelFiles(size, hashlib.sha256(key.encode()).hexdigest(), _iso(mtime))
    if path.is_file() and path.suffix == ".gguf":
        return _gguf(path, base)
    return _folder(path, base)


def _gguf(path: Path, base: ModelFiles) -> ModelFiles:
    import gguf

    reader = gguf.GGUFReader(path)
    metadata: dict[str, Any] = {}
    for key, value in reader.fields.items():
        if key.startswith(("GGUF.", "tokenizer.")) or value.types[:1] == [gguf.GGUFValueType.ARRAY]:
            continue
        metadata[key] = value.contents()
    count = sum(int(t.n_elements) for t in reader.tensors)
    metadata["general.parameter_count"] = count
    file_type = metadata.get("general.file_type")
    try:
        level = gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        level = ""
    family = str(metadata.get("general.architecture", ""))
    license_ = str(metadata.get("general.license", ""))
    return ModelFiles(
        base.size, base.digest, base.modified_at, "gguf", family, human_number(count), level, license_, metadata
    )


def _folder(path: Path, base: ModelFiles) -> ModelFiles:
    config_path = path / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    except (OSError, ValueError):
        config = {}
    family = str(config.get("model_type", ""))
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "")
    level = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}.get(dtype, dtype.upper())
    metadata = {"general.architecture": family} if family else {}
    return ModelFiles(base.size, base.digest, base.modified_at, "safetensors", family, "", level, "", metadata)


def human_number(n: int) -> str:
    """Parameter counts as Ollama prints them: 134.52M, 1.7B."""
    for unit, scale, digits in (("B", 1e9, 1), ("M", 1e6, 2), ("K", 1e3, 0)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.{digits}f}{unit}"
    return str(n)


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def tag_name(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


@dataclass(frozen=True)
class Served:
    """One model this server answers for, loaded or not."""

    name: str
    spec: str | None  # what `--model` says for it
    info: ModelInfo | None  # None: not loaded now
    expires_at: str = NEVER  # when an idle model unloads (`keep_alive` in the models file)


def served_models(state: ServerState) -> list[Served]:
    """The default model, then those of `--models-file`."""
    if state.model is None:  # readiness is checked before any route runs
        return []
    out = [Served(state.model.name, state.settings.model, state.model)]
    extra = state.extra_models
    for name, slot in extra.slots.items() if extra is not None else ():
        info = slot.info if slot.status == "ready" else None
        keep_alive = slot.entry.keep_alive
        expires = _iso(time.time() + keep_alive - (time.monotonic() - slot.last_used)) if keep_alive else NEVER
        out.append(Served(name, slot.entry.settings.model, info, expires))
    return out


async def use_model(ready: Ready, requested: str) -> Served:
    """Point `ready` at the model an Ollama name picks: a served name with or without `:latest`, in any
    case. One loaded on first use is waited for, as Ollama's clients expect; an unknown name is a 404."""
    served = served_models(ready.state)
    wanted = requested.strip().casefold()
    bare = wanted.removesuffix(LATEST)
    found = next((s for s in served if s.name.casefold() in (wanted, bare)), None)
    if found is None:
        ready.check_model_name(requested)  # the 404 naming the served models
        raise APIError(404, f"model '{requested}' not found", param="model")  # not reached
    await model_loaded(ready.state, found.name, LOAD_PATIENCE_S)  # loaded on first use: waited for
    ready.check_model_name(found.name)
    return Served(found.name, found.spec, ready.model, found.expires_at)


def details(files: ModelFiles) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": files.format,
        "family": files.family,
        "families": [files.family] if files.family else None,
        "parameter_size": files.parameter_size,
        "quantization_level": files.quantization_level,
    }


def listed(model: Served, files: ModelFiles) -> dict[str, Any]:
    """One entry of `/api/tags`."""
    name = tag_name(model.name)
    modified = files.modified_at or (_iso(model.info.created) if model.info is not None else "")
    entry = {"name": name, "model": name, "modified_at": modified}
    return {**entry, "size": files.size, "digest": files.digest, "details": details(files)}


def running(model: Served, files: ModelFiles) -> dict[str, Any]:
    """One entry of `/api/ps` (loaded models only)."""
    entry = {k: v for k, v in listed(model, files).items() if k != "modified_at"}
    context = model.info.max_model_len if model.info is not None else 0
    return {**entry, "expires_at": model.expires_at, "context_length": context}


def shown(info: ModelInfo, files: ModelFiles) -> dict[str, Any]:
    """`/api/show`: details, sampling defaults as Modelfile parameters, the chat template, model_info."""
    template = getattr(info.tokenizer, "chat_template", None)
    model_info = dict(files.metadata)
    model_info[f"{files.family or 'general'}.context_length"] = info.max_model_len
    capabilities = ["completion", "tools"] if info.grammars is not None else ["completion"]
    out: dict[str, Any] = {
        "parameters": parameters(info),
        "template": template if isinstance(template, str) else "",
        "details": details(files),
        "model_info": model_info,
        "capabilities": capabilities,
        "modified_at": files.modified_at or _iso(info.created),
    }
    if files.license:
        out["license"] = files.license
    return out


def parameters(info: ModelInfo) -> str:
    """The model's sampling defaults and the served context, in the Modelfile `PARAMETER` layout Ollama shows."""
    named = {_OLLAMA_OPTION.get(k, k): v for k, v in info.sampling_defaults.items()}
    named["num_ctx"] = info.max_model_len
    return "\n".join(f"{k:<30} {_number(v)}" for k, v in sorted(named.items()))


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))
