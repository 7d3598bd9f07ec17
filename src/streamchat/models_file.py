"""More models in one server: a TOML file naming each model and how to serve it.

    [models.fast]
    model = "/models/qwen2.5-0.5b-instruct-q4_k_m.gguf"   # anything --model takes
    keep_alive = 300        # unload after this many idle seconds (default: stay loaded)
    lazy = true             # load on the first request that names it (default: at start)
    sampling_defaults = "temperature=0.7"
    engine = "llamacpp"     # any other `serve` setting may be set per model

The server's own `--model` stays the default model (requests that name none get it); each entry
adds one more, answered under its name. Every entry starts from the server's settings and
overrides what it sets, so one file line is enough for a model.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from streamchat.config import Settings

_OWN_KEYS = {"keep_alive", "lazy"}
_SERVER_ONLY = {"host", "port", "api_key", "api_key_file", "models_file", "cors_origins", "served_model_name"}


@dataclass(frozen=True)
class ModelEntry:
    name: str
    settings: Settings  # the server's settings with this model's overrides
    lazy: bool = False
    keep_alive: float | None = None  # idle seconds before unloading; None: never


class ModelsFileError(ValueError):
    pass


def read_models_file(path: Path, server: Settings) -> list[ModelEntry]:
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ModelsFileError(f"{path}: {exc}") from exc
    models = table.get("models")
    if not isinstance(models, dict) or not models:
        raise ModelsFileError(f"{path}: no [models.<name>] tables")
    entries = []
    for name, spec in models.items():
        if not isinstance(spec, dict) or "model" not in spec:
            raise ModelsFileError(f"{path}: [models.{name}] needs 'model'")
        unknown = set(spec) - _OWN_KEYS - set(Settings.model_fields)
        refused = set(spec) & _SERVER_ONLY
        if unknown or refused:
            raise ModelsFileError(f"{path}: [models.{name}] cannot set {', '.join(sorted(unknown | refused))}")
        overrides = {k: v for k, v in spec.items() if k not in _OWN_KEYS}
        if overrides.get("model") == "embedded":
            overrides["model"] = None
        try:
            settings = Settings(**{**server.model_dump(), **overrides, "served_model_name": name})
        except ValueError as exc:
            raise ModelsFileError(f"{path}: [models.{name}]: {exc}") from exc
        keep_alive = spec.get("keep_alive")
        if keep_alive is not None and (not isinstance(keep_alive, int | float) or keep_alive <= 0):
            raise ModelsFileError(f"{path}: [models.{name}] keep_alive must be a positive number of seconds")
        entries.append(ModelEntry(name, settings, bool(spec.get("lazy", False)), keep_alive))
    return entries
