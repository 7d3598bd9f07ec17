"""Schemathesis against the server's own `/openapi.json`: every route, valid and invalid input.

Over a thousand generated requests, in both of schemathesis's modes (bodies, queries, paths and
headers that match the schema, and ones that break it). None may get a 5xx or hang, every error has
OpenAI's shape, and every event stream ends with `[DONE]`. The server is a dedicated one with a
tiny answer budget (`--default-max-tokens 2`, `--max-tokens-limit 4`) so a valid request costs a
few decode steps, and `--resume-grace 0` so nothing keeps generating after its reader is gone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.conftest import running_server

EXAMPLES_PER_OPERATION = 80  # per mode; small operations (no parameters) run out of cases sooner
MIN_TOTAL_CASES = 1000
REQUEST_TIMEOUT_S = 30.0  # a hang fails the case
calls: Counter[str] = Counter()


@pytest.fixture(scope="module")
def fuzz_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    flags = [
        "--default-max-tokens", "2", "--max-tokens-limit", "4", "--max-prompt-tokens", "64",
        "--resume-grace", "0", "--max-num-seqs", "8", "--log-level", "warning",
    ]  # fmt: skip
    with running_server(tmp_path_factory.mktemp("fuzz"), *flags) as server:
        yield server.url
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log, log[-4000:]


def _operations(url: str) -> list[schemathesis.APIOperation]:
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


def check_response(case: schemathesis.Case, resp: schemathesis.Response) -> None:
    where = f"{case.method} {case.formatted_path} -> {resp.status_code}: {resp.text[:300]!r}"
    assert resp.status_code < 500, where
    kind = (resp.headers.get("content-type") or [""])[0]
    if resp.status_code >= 400:
        assert kind.startswith("application/json"), where
        error = resp.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"], where
    elif kind.startswith("text/event-stream") and not resp.stream_cut_short:
        assert resp.text.endswith("data: [DONE]\n\n"), where


def test_the_schema_describes_the_real_request_bodies(fuzz_url: str) -> None:
    spec = requests.get(f"{fuzz_url}/openapi.json", timeout=10).json()
    bodies = {
        (path, method): op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if "requestBody" in op
    }
    assert bodies == {
        ("/v1/chat/completions", "post"): "ChatCompletionRequest",
        ("/v1/completions", "post"): "CompletionRequest",
        ("/stream", "post"): "GLMRequest",
        ("/", "post"): "GLMRequest",
    }
    chat = spec["components"]["schemas"]["ChatCompletionRequest"]
    assert {"messages", "max_tokens", "temperature", "stream", "resumable"} <= set(chat["properties"])
    assert chat["properties"]["temperature"]["maximum"] == 2.0  # the pydantic ranges reach the fuzzer


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_input_gets_a_server_error_or_hangs(fuzz_url: str, mode: GenerationMode) -> None:
    session = requests.Session()
    for operation in _operations(fuzz_url):
        try:
            strategy = operation.as_strategy(generation_mode=mode)
        except Exception:  # noqa: BLE001 - an operation with nothing to break has no negative cases
            continue
        try:
            _fuzz(fuzz_url, session, operation.label, strategy)
        except Unsatisfiable:  # an operation without parameters has nothing to break
            continue


def _fuzz(url: str, session: requests.Session, label: str, strategy) -> None:  # noqa: ANN001
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def fuzz(case: schemathesis.Case) -> None:
        try:
            resp = case.call(base_url=url, session=session, timeout=REQUEST_TIMEOUT_S)
        except (requests.exceptions.InvalidHeader, UnicodeEncodeError):
            return  # the client library refuses to send it; nothing reached the server
        calls[label] += 1
        check_response(case, resp)

    fuzz()


def test_the_fuzzing_covered_every_route_with_enough_cases(fuzz_url: str) -> None:
    labels = {op.label for op in _operations(fuzz_url)}
    if not calls:
        pytest.skip("the fuzz tests did not run in this session")
    assert set(calls) == labels, labels - set(calls)
    assert sum(calls.values()) >= MIN_TOTAL_CASES, calls


def test_out_of_vocabulary_stop_token_ids_are_refused(fuzz_url: str) -> None:
    """Found by this fuzzing: such ids made the sampler raise, which ended every stream in the batch."""
    body = {"prompt": "Hi", "max_tokens": 2, "min_tokens": 2, "stop_token_ids": [3349461]}
    resp = requests.post(f"{fuzz_url}/v1/completions", json=body, timeout=REQUEST_TIMEOUT_S)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "stop_token_ids"
    body["stop_token_ids"] = [-1]
    assert requests.post(f"{fuzz_url}/v1/completions", json=body, timeout=REQUEST_TIMEOUT_S).status_code == 400
