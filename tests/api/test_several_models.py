"""Several models in one server (`--models-file`): each request's `model` picks its engine."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from streamchat.config import Settings
from streamchat.models_file import ModelsFileError, read_models_file
from tests.conftest import running_server
from tests.support import assert_error, wait_for

MODELS = """
[models.smol-two]
model = "embedded"
max_num_seqs = 2
max_model_len = 512

[models.smol-lazy]
model = "embedded"
lazy = true
keep_alive = 3
max_num_seqs = 2
max_model_len = 512
"""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    folder = tmp_path_factory.mktemp("models")
    (folder / "models.toml").write_text(MODELS)
    flags = ["--models-file", str(folder / "models.toml"), "--max-num-seqs", "4", "--log-level", "warning"]
    with running_server(folder, *flags) as server, httpx.Client(base_url=server.url, timeout=120) as client:

        def second_ready() -> bool:
            return client.get("/health").json().get("models", {}).get("smol-two", {}).get("status") == "ready"

        assert wait_for(second_ready, timeout=240)
        yield client


def ask(client: httpx.Client, model: str | None) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 6, "temperature": 0}
    return client.post("/v1/chat/completions", json=body | ({"model": model} if model else {}))


def test_every_model_is_listed_and_answers_by_name_at_once(served: httpx.Client) -> None:
    names = [m["id"] for m in served.get("/v1/models").json()["data"]]
    default = names[0]
    assert names[1:] == ["smol-two", "smol-lazy"]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda m: ask(served, m), [default, "smol-two", None, "smol-two"]))
    assert [r.status_code for r in answers] == [200] * 4
    assert [r.json()["model"] for r in answers] == [default, "smol-two", default, "smol-two"]
    assert all(r.json()["choices"][0]["message"]["content"] for r in answers)


def test_an_unknown_model_is_a_404_naming_the_served_ones(served: httpx.Client) -> None:
    error = assert_error(ask(served, "nope"), 404, "model")
    assert "'smol-two'" in error["message"] and "'smol-lazy'" in error["message"]


def test_a_lazy_model_loads_on_first_use_and_unloads_when_idle(served: httpx.Client) -> None:
    def status() -> str:
        return served.get("/health").json()["models"]["smol-lazy"]["status"]

    assert status() == "unloaded"
    first = ask(served, "smol-lazy")  # waits for the load
    assert first.status_code == 200 and first.json()["model"] == "smol-lazy"
    assert status() == "ready"
    metrics = served.get("/metrics").text
    assert 'streamchat_model_loaded{model="smol-lazy"} 1.0' in metrics
    assert wait_for(lambda: status() == "unloaded", timeout=30), "keep_alive: unloaded after 3 idle seconds"
    started = time.monotonic()
    again = ask(served, "smol-lazy")
    assert again.status_code == 200 and again.json()["choices"][0]["message"] == first.json()["choices"][0]["message"]
    assert time.monotonic() - started < 120


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "no [models"),
        ("[models.a]\nengine = 'llamacpp'\n", "needs 'model'"),
        ("[models.a]\nmodel = 'x'\nport = 9\n", "cannot set port"),
        ("[models.a]\nmodel = 'x'\nwarp_speed = 9\n", "cannot set warp_speed"),
        ("[models.a]\nmodel = 'x'\nkeep_alive = -1\n", "keep_alive"),
        ("[models.a\n", "models.toml"),
    ],
)
def test_a_bad_models_file_says_what_is_wrong(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "models.toml"
    path.write_text(text)
    with pytest.raises(ModelsFileError, match=problem.replace("[", r"\[")):
        read_models_file(path, Settings())


async def test_an_empty_model_id_is_a_404_not_a_server_error(inprocess) -> None:
    """Regression: GET /v1/models/ with an empty id raised a KeyError (500)."""
    for path in ("/v1/models/", "/v1/models/%0A"):
        assert_error(await inprocess.client.get(path), 404, "model")
