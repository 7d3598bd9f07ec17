"""The embedded model loaded once for all in-process engine tests."""

from __future__ import annotations

import pytest

from streamchat.config import default_cache_dir
from streamchat.engine.transformers.loader import LoadedModel, load_transformers


@pytest.fixture(scope="session")
def loaded() -> LoadedModel:
    return load_transformers(None, "cpu", "float32", default_cache_dir(), None, "auto")
