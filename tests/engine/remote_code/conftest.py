"""Fixtures for models that ship their own code: the embedded tokenizer, tiny model folders."""

from __future__ import annotations

import pytest

from streamchat.config import default_cache_dir
from streamchat.engine.llamacpp.loader import gguf_tokenizer
from streamchat.engine.model_files import embedded_gguf


@pytest.fixture(scope="session")
def glm_tokenizer():
    """The embedded model's tokenizer (byte-level BPE: Chinese characters span several tokens)."""
    return gguf_tokenizer(embedded_gguf(), default_cache_dir())
