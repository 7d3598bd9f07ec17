"""Schemathesis against the app's own `/openapi.json`: every route, valid and invalid input.

Over a thousand generated requests, in both of schemathesis's modes (bodies, queries, paths and
headers that match the schema, and ones that break it). None may get a 5xx or hang, every error has
its protocol's shape, every event stream ends with `[DONE]`, and nothing may log a traceback.

In process: schemathesis calls the app over ASGI on its own event-loop thread (it runs the app's
lifespan there), and the model is the fake runner of `tests/api/inprocess.py`, so a valid request
costs a few engine steps and no model. The app has a tiny answer budget (`default_max_tokens 2`,
`max_tokens_limit 4`) and `resume_grace 0`, so nothing keeps generating after its reader is gone.

Each mode's campaign runs once, when the first test that needs it asks (`Fuzzer.campaign`): every
test gets the campaigns it checks whatever else runs, in whatever order.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from hypothesis.strategies import SearchStrategy
from schemathesis import GenerationMode
from transformers import PreTrainedTokenizerBase

from streamchat.api.app import create_app
from streamchat.config import Settings
from tests.api.inprocess import InProcess, build_app

EXAMPLES_PER_OPERATION = 80  # per mode; small operations (no parameters) run out of cases sooner
MIN_TOTAL_CASES = 1000
REQUEST_TIMEOUT_S = 30.0  # a hang fails the case
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
FUZZ_SETTINGS = Settings(default_max_tokens=2, max_tokens_limit=4, max_prompt_tokens=64, resume_grace=0, max_num_seqs=8)


@dataclass
class Campaign:
    """One mode's fuzzing: the operations, requests sent and failures per operation, tracebacks logged."""

    labels: set[str]
    calls: Counter[str] = field(default_factory=Counter)
    failures: dict[str, Exception] = field(default_factory=dict)
    tracebacks: list[str] = field(default_factory=list)


class TracebackCatcher(logging.Handler):
    """Keeps every log record that carries an exception: the in-process form of a server log's traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.caught: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.caught.append(f"{record.name}: {record.getMessage()}\n{self.format(record)}")


@contextmanager
def catching_tracebacks() -> Iterator[list[str]]:
    catcher = TracebackCatcher()
    root = logging.getLogger()
    root.addHandler(catcher)
    try:
        yield catcher.caught
    finally:
        root.removeHandler(catcher)


class Fuzzer:
    """Fuzzes fresh in-process apps; each mode's campaign runs at most once, when first asked for."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self._campaigns: dict[GenerationMode, Campaign] = {}

    def campaign(self, mode: GenerationMode) -> Campaign:
        if mode not in self._campaigns:
            self._campaigns[mode] = self._run(mode)
        return self._campaigns[mode]

    def _run(self, mode: GenerationMode) -> Campaign:
        """One app per campaign: schemathesis's pytest plugin ends every app's lifespan when a test ends."""
        app, _ = build_app(self.tokenizer, FUZZ_SETTINGS)
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)  # starts the lifespan (engine thread)
        operations = [result.ok() for result in schema.get_all_operations()]
        campaign = Campaign(labels={operation.label for operation in operations})
        with catching_tracebacks() as tracebacks:
            for operation in operations:
                try:
                    strategy = operation.as_strategy(generation_mode=mode)
                except Exception:  # noqa: BLE001 - an operation with nothing to break has no negative cases
                    continue
                try:
                    _fuzz(operation.label, strategy, campaign.calls)
                except Unsatisfiable:  # an operation without parameters has nothing to break
                    continue
                except Exception as failure:  # noqa: BLE001 - kept for the test of this mode to raise
                    campaign.failures[operation.label] = failure
        campaign.tracebacks = list(tracebacks)
        return campaign


@pytest.fixture(scope="module")
def fuzzer(tokenizer: PreTrainedTokenizerBase) -> Fuzzer:
    """Shared by the module so each mode's campaign runs once, whichever test asks for it first."""
    return Fuzzer(tokenizer)


def check_response(case: schemathesis.Case, resp: schemathesis.Response) -> None:
    where = f"{case.method} {case.formatted_path} -> {resp.status_code}: {resp.text[:300]!r}"
    assert resp.status_code < 500, where
    kind = (resp.headers.get("content-type") or [""])[0]
    path = case.formatted_path
    if resp.status_code >= 400 and path.startswith("/api/"):  # Ollama's shape
        assert kind.startswith("application/json"), where
        assert set(resp.json()) == {"error"} and isinstance(resp.json()["error"], str), where
    elif resp.status_code >= 400 and path.startswith("/v1/messages"):  # Anthropic's shape
        assert kind.startswith("application/json"), where
        body = resp.json()
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, where
    elif resp.status_code >= 400:
        assert kind.startswith("application/json"), where
        error = resp.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"], where
    elif kind.startswith("text/event-stream") and not resp.stream_cut_short:
        assert resp.text.endswith(_STREAM_ENDS.get(path, "data: [DONE]\n\n")) or any(
            f"event: {last}\n" in resp.text.rsplit("\n\n", 2)[-2] for last in _LAST_EVENTS.get(path, ())
        ), where


# Streams that end as their own protocols do rather than with `[DONE]`: the last event's name.
_STREAM_ENDS: dict[str, str] = {}
_LAST_EVENTS = {
    "/v1/messages": ("message_stop", "error"),
    "/v1/responses": ("response.completed", "response.incomplete", "response.failed"),
}


def _fuzz(label: str, strategy: SearchStrategy[schemathesis.Case], calls: Counter[str]) -> None:
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def fuzz(case: schemathesis.Case) -> None:
        try:
            resp = case.call(timeout=REQUEST_TIMEOUT_S)
        except (requests.exceptions.InvalidHeader, UnicodeEncodeError):
            return  # the client library refuses to send it; nothing reached the app
        calls[label] += 1
        check_response(case, resp)

    fuzz()


async def test_the_schema_describes_the_real_request_bodies() -> None:
    app = create_app(Settings())  # the schema needs no model: the lifespan is not run
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        spec = (await client.get("/openapi.json")).json()
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
        ("/api/chat", "post"): "OllamaChatRequest",
        ("/api/generate", "post"): "OllamaGenerateRequest",
        ("/api/show", "post"): "OllamaShowRequest",
        ("/v1/messages", "post"): "MessagesRequest",
        ("/v1/messages/count_tokens", "post"): "Conversation",
        ("/v1/responses", "post"): "ResponseRequest",
    }
    chat = spec["components"]["schemas"]["ChatCompletionRequest"]
    assert {"messages", "max_tokens", "temperature", "stream", "resumable"} <= set(chat["properties"])
    assert chat["properties"]["temperature"]["maximum"] == 2.0  # the pydantic ranges reach the fuzzer


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_no_input_gets_a_server_error_or_hangs(fuzzer: Fuzzer, mode: GenerationMode) -> None:
    campaign = fuzzer.campaign(mode)
    assert campaign.calls, "no request was sent"
    if campaign.failures:
        label, failure = next(iter(campaign.failures.items()))
        failure.add_note(f"fuzzing {label} ({mode.value}); every operation that failed: {sorted(campaign.failures)}")
        raise failure
    assert not campaign.tracebacks, "\n\n".join(campaign.tracebacks)[-4000:]


def test_the_fuzzing_covered_every_route_with_enough_cases(fuzzer: Fuzzer) -> None:
    campaigns = [fuzzer.campaign(mode) for mode in MODES]
    labels = set.union(*(campaign.labels for campaign in campaigns))
    calls = sum((campaign.calls for campaign in campaigns), Counter())
    assert set(calls) == labels, labels - set(calls)
    assert sum(calls.values()) >= MIN_TOTAL_CASES, calls


async def test_out_of_vocabulary_stop_token_ids_are_refused(inprocess: InProcess) -> None:
    """Found by this fuzzing: such ids made the sampler raise, which ended every stream in the batch."""
    body = {"prompt": "Hi", "max_tokens": 2, "min_tokens": 2, "stop_token_ids": [3349461]}
    resp = await inprocess.client.post("/v1/completions", json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == "stop_token_ids"
    body["stop_token_ids"] = [-1]
    assert (await inprocess.client.post("/v1/completions", json=body)).status_code == 400
    assert inprocess.runner.prompts == [], "a refused request reached the engine"
