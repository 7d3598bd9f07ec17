"""Structured outputs through the official `openai` SDK against the real server.

Every answer of the fifty schemas of `bench/json_schemas.py` parses and validates (`jsonschema`,
formats checked), greedy and sampled, sent sixteen at a time so constrained rows share batches;
a schema, regex or choice the grammar library cannot compile is a 400 naming the field.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import jsonschema
import openai
import pytest
from bench.json_schemas import CASES
from pydantic import BaseModel, Field

from tests.support import assert_error

MAX_TOKENS = 400


class City(BaseModel):
    name: str
    country: str
    population: int = Field(ge=0)
    landmarks: list[str] = Field(min_length=1, max_length=3)


def test_parse_returns_the_pydantic_object(oai: openai.OpenAI, model_name: str) -> None:
    r = oai.chat.completions.parse(
        model=model_name,
        messages=[{"role": "user", "content": "Describe Paris."}],
        response_format=City,
        temperature=0,
        max_tokens=MAX_TOKENS,
    )
    (choice,) = r.choices
    assert choice.finish_reason == "stop"
    assert isinstance(choice.message.parsed, City)
    assert City.model_validate_json(choice.message.content) == choice.message.parsed


def test_json_mode_streams_one_object(oai: openai.OpenAI, model_name: str) -> None:
    chunks = oai.chat.completions.create(
        model=model_name,
        messages=[{"role": "user", "content": "Give a JSON object describing a cat."}],
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=MAX_TOKENS,
        stream=True,
    )
    pieces = [(c.choices[0].delta.content or "", c.choices[0].finish_reason) for c in chunks if c.choices]
    assert pieces[-1][1] == "stop"
    assert len([p for p, _ in pieces if p]) > 1, "the answer arrives in pieces"
    assert isinstance(json.loads("".join(p for p, _ in pieces)), dict)


def _answer(base_url: str, index: int, temperature: float) -> tuple[str, str]:
    prompt, schema = CASES[index]
    body = {
        "messages": [{"role": "user", "content": f"{prompt} Answer in JSON."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
        "temperature": temperature,
        "seed": index,
        "max_tokens": MAX_TOKENS,
    }
    r = httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=300)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    return choice["message"]["content"], choice["finish_reason"]


@pytest.mark.parametrize("temperature", [0.0, 0.7], ids=["greedy", "sampled"])
def test_fifty_schemas_give_only_valid_answers(base_url: str, temperature: float) -> None:
    assert len(CASES) >= 50
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: _answer(base_url, i, temperature), range(len(CASES))))
    checker = jsonschema.FormatChecker()
    problems = []
    for (prompt, schema), (text, finish) in zip(CASES, answers, strict=True):
        try:
            jsonschema.validate(json.loads(text), schema, format_checker=checker)
        except (ValueError, jsonschema.ValidationError) as exc:
            problems.append(f"{prompt!r} ({finish}): {exc} in {text[:200]!r}")
        else:
            assert finish == "stop", (prompt, text)
    assert not problems, "\n".join(problems)


def test_regex_and_choice_through_structured_outputs(oai: openai.OpenAI, model_name: str) -> None:
    question = [{"role": "user", "content": "What is the capital of France?"}]
    r = oai.chat.completions.create(
        model=model_name, messages=question, temperature=0, max_tokens=20,
        extra_body={"structured_outputs": {"regex": "[A-Z][a-z]{2,10}"}},
    )  # fmt: skip
    assert r.choices[0].message.content.isalpha() and r.choices[0].message.content[0].isupper()
    r = oai.chat.completions.create(
        model=model_name, messages=question, temperature=0, max_tokens=20,
        extra_body={"structured_outputs": {"choice": ["Paris", "Lyon", "Ça « va »"]}},
    )  # fmt: skip
    assert r.choices[0].message.content in ("Paris", "Lyon", "Ça « va »")
    r = oai.chat.completions.create(
        model=model_name, messages=question, temperature=0, max_tokens=20, extra_body={"guided_choice": ["yes", "no"]}
    )
    assert r.choices[0].message.content in ("yes", "no")


def test_lark_and_gbnf_grammars(oai: openai.OpenAI, model_name: str) -> None:
    question = [{"role": "user", "content": "Is water wet?"}]
    for grammar in ('start: "yes" | "no" | "maybe"', 'root ::= "yes" | "no" | "maybe"'):
        r = oai.chat.completions.create(
            model=model_name, messages=question, temperature=0, max_tokens=10,
            extra_body={"structured_outputs": {"grammar": grammar}},
        )  # fmt: skip
        assert r.choices[0].message.content in ("yes", "no", "maybe")


def test_completions_take_a_schema_too(http: httpx.Client) -> None:
    schema = {"type": "object", "properties": {"capital": {"type": "string"}}, "required": ["capital"]}
    r = http.post(
        "/v1/completions",
        json={"prompt": "France, as JSON:", "temperature": 0, "max_tokens": 60, "structured_outputs": {"json": schema}},
    )
    assert r.status_code == 200, r.text
    jsonschema.validate(json.loads(r.json()["choices"][0]["text"]), schema)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strin"}}}},
         "response_format.json_schema.schema"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/nowhere"}}}},
         "response_format.json_schema.schema"),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"uniqueItems": True}}}},
         "response_format.json_schema.schema"),
        ({"response_format": {"type": "json_schema"}}, None),
        ({"response_format": {"type": "xml"}}, None),
        ({"structured_outputs": {"regex": "[a-"}}, "structured_outputs.regex"),
        ({"structured_outputs": {"grammar": "start: undefined_rule"}}, "structured_outputs.grammar"),
        ({"structured_outputs": {"json": "{not json"}}, "structured_outputs.json"),
        ({"structured_outputs": {"regex": "a", "choice": ["a"]}}, "structured_outputs"),
        ({"structured_outputs": {"yaml": "a: 1"}}, None),
        ({"guided_choice": []}, None),
        ({"response_format": {"type": "json_object"}, "guided_regex": "a+"}, "guided_regex"),
    ],
)  # fmt: skip
def test_constraints_that_cannot_be_enforced_are_refused(http: httpx.Client, body: dict, param: str | None) -> None:
    full = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, **body}
    error = assert_error(http.post("/v1/chat/completions", json=full), 400, param)
    assert error["type"] == "invalid_request_error"


def test_a_refused_schema_names_the_problem(http: httpx.Client) -> None:
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strin"}}},
    }
    assert "strin" in assert_error(http.post("/v1/chat/completions", json=body), 400)["message"]
