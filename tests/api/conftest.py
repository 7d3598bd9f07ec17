"""In-process fixtures: the real app over ASGI with a fake runner (see `tests/api/inprocess.py`).

They need only the embedded model's tokenizer, never a server process or the model's weights.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

import pytest
from transformers import PreTrainedTokenizerBase

from streamchat.config import Settings
from tests.api.inprocess import InProcess, StartInProcess, serve_in_process


@pytest.fixture
def start_inprocess(tokenizer: PreTrainedTokenizerBase) -> StartInProcess:
    """`async with start_inprocess(Settings(...)) as server:` — an app with the settings a test needs."""
    return partial(serve_in_process, tokenizer)


@pytest.fixture
async def inprocess(start_inprocess: StartInProcess) -> AsyncIterator[InProcess]:
    """The app with default settings, its engine running on the fake runner."""
    async with start_inprocess(Settings()) as server:
        yield server
