"""Sampling defaults per model: what a request gets for the settings it leaves unset.

A small model sampled at a plain temperature loops ("A tale of heroes, a tale of heroes, …");
the people who made a model often say how to sample it, and operators know their models. Three
sources, later ones winning:

1. the model's own word: `generation_config.json` for a transformers folder, the
   `general.sampling.*` metadata of a GGUF file;
2. for the embedded SmolLM2-135M-Instruct, `EMBEDDED_DEFAULTS`, chosen by measurement
   (`python -m bench.loop_rate`, figures in docs/benchmarks.md);
3. the operator's `--sampling-defaults "repetition_penalty=1.1,temperature=0.7"`.
"""

from __future__ import annotations

from pathlib import Path

from streamchat.engine.model_files import gguf_metadata

# The fields a model may give a default for, with the range each accepts.
RANGES: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (1e-6, 1.0),
    "top_k": (0, 1_000_000),
    "min_p": (0.0, 1.0),
    "repetition_penalty": (1e-6, 10.0),
}
# Without a repetition penalty the embedded model loops in about a third of 60 everyday answers
# (400 tokens) at the chat page's settings and at the seed routes'; 1.1 leaves 1-2 of 60 looping,
# 1.15 at most 1 (≤ 2 %), the weakest penalty that does: `python -m bench.loop_rate`, figures in
# docs/benchmarks.md.
EMBEDDED_DEFAULTS: dict[str, float] = {"repetition_penalty": 1.15}

_GGUF_KEYS = {
    "general.sampling.temp": "temperature",
    "general.sampling.top_p": "top_p",
    "general.sampling.top_k": "top_k",
    "general.sampling.min_p": "min_p",
    "general.sampling.penalty_repeat": "repetition_penalty",
}
_GENERATION_CONFIG_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


def checked(defaults: dict[str, float]) -> dict[str, float]:
    """`defaults` with every name known and every value in range; ValueError naming the first that is not."""
    out: dict[str, float] = {}
    for name, value in defaults.items():
        if name not in RANGES:
            raise ValueError(f"no sampling default '{name}': the known ones are {', '.join(RANGES)}")
        low, high = RANGES[name]
        if not low <= float(value) <= high:
            raise ValueError(f"sampling default {name}={value} is outside [{low}, {high}]")
        out[name] = int(value) if name == "top_k" else float(value)
    return out


def parse(text: str) -> dict[str, float]:
    """`"repetition_penalty=1.1, temperature=0.7"` → {"repetition_penalty": 1.1, "temperature": 0.7}."""
    pairs: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"'{item}' is not name=value")
        try:
            pairs[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"'{item}': {value.strip()!r} is not a number") from None
    return checked(pairs)


def from_generation_config(config: object) -> dict[str, float]:
    """The sampling values a model's `generation_config.json` sets (those left at their defaults are not set)."""
    if config is None:
        return {}
    given = config.to_diff_dict() if hasattr(config, "to_diff_dict") else {}
    return checked({k: given[k] for k in _GENERATION_CONFIG_KEYS if given.get(k) is not None})


def from_gguf(path: Path) -> dict[str, float]:
    """The `general.sampling.*` values a GGUF file carries."""
    metadata = gguf_metadata(path)
    return checked({name: float(metadata[key]) for key, name in _GGUF_KEYS.items() if key in metadata})


def merged(model: dict[str, float], embedded: bool, operator: dict[str, float]) -> dict[str, float]:
    """The model's own defaults, then the embedded model's measured ones, then the operator's."""
    return {**model, **(EMBEDDED_DEFAULTS if embedded else {}), **operator}
