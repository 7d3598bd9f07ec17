"""Whether a model ships Python code of its own, and the refusal to run it unasked.

A folder's `config.json` (and `tokenizer_config.json`) may name classes in `auto_map` that live in
`.py` files beside the weights; loading the model imports and runs them. That is arbitrary code
with the server's rights, so it runs only when the operator says so with `--trust-remote-code`.
Reading the JSON runs nothing, so the refusal can come before anything is loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from streamchat.engine.model_files import ModelNotFoundError, resolve_model

_CONFIG_FILES = ("config.json", "tokenizer_config.json")
FLAG = "--trust-remote-code"


class RemoteCodeRefusedError(RuntimeError):
    """The model ships code and the operator has not allowed it to run."""


@dataclass(frozen=True)
class ShippedCode:
    source: str  # the model folder
    classes: dict[str, str]  # auto class ("AutoModel", "AutoTokenizer", …) → "module.Class"

    @property
    def files(self) -> list[str]:
        """The `.py` files the references name (a reference may start with "other/repo--")."""
        return sorted({ref.split("--")[-1].rsplit(".", 1)[0] + ".py" for ref in self.classes.values()})


def shipped_code(spec: str | None) -> ShippedCode | None:
    """The code a local model folder ships, or None (no `auto_map`, a GGUF file, or a hub id).

    A hub id is checked by transformers itself when it loads (see `refused_by_transformers`).
    """
    _, path = resolve_model(spec)
    if path is None or not path.is_dir():
        return None
    classes: dict[str, str] = {}
    for name in _CONFIG_FILES:
        file = path / name
        if not file.is_file():
            continue
        auto_map = json.loads(file.read_text(encoding="utf-8")).get("auto_map") or {}
        for auto_class, refs in auto_map.items():
            # a tokenizer names [slow, fast] classes, either of which may be null
            for ref in refs if isinstance(refs, list) else [refs]:
                if ref:
                    classes.setdefault(auto_class, ref)
    return ShippedCode(str(path), classes) if classes else None


def require_trust(code: ShippedCode, trusted: bool) -> None:
    if not trusted:
        raise RemoteCodeRefusedError(
            f"{code.source} ships its own Python code ({', '.join(code.files)}, named by auto_map), which "
            f"would run inside this server as the model loads. Read it; to run it, start with {FLAG} "
            "(or STREAMCHAT_TRUST_REMOTE_CODE=true)."
        )


def refusal(spec: str | None, trusted: bool) -> str | None:
    """The refusal message for `spec`, checked before the server starts; None when it may load."""
    try:
        code = shipped_code(spec)
    except (OSError, ValueError, ModelNotFoundError):  # a missing path or a broken config: the loader says so
        return None
    if code is None:
        return None
    try:
        require_trust(code, trusted)
    except RemoteCodeRefusedError as exc:
        return str(exc)
    return None


def refused_by_transformers(spec: str | None, exc: Exception) -> RemoteCodeRefusedError | None:
    """transformers' own refusal (a hub id that ships code) in our words, naming our flag."""
    if "trust_remote_code" not in str(exc):
        return None
    return RemoteCodeRefusedError(
        f"{spec} ships its own Python code, which would run inside this server as the model loads. "
        f"Read it; to run it, start with {FLAG} (or STREAMCHAT_TRUST_REMOTE_CODE=true)."
    )
