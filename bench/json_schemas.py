"""Fifty JSON schemas with a prompt each: the structured-output tests and benchmark share them.

They cover what applications send: nested objects, arrays with bounds, enums, `anyOf`, `$ref`
with `$defs`, string patterns and formats, numbers and integers with ranges, booleans, `const`,
optional properties and closed objects.
"""

from __future__ import annotations

from typing import Any

S: dict[str, Any] = {"type": "string"}
INT: dict[str, Any] = {"type": "integer"}
N: dict[str, Any] = {"type": "number"}
B: dict[str, Any] = {"type": "boolean"}
# As applications declare an address field: RFC 5321 caps a forward path at 254 characters.
EMAIL: dict[str, Any] = {"type": "string", "format": "email", "maxLength": 254}


def obj(props: dict[str, Any], required: list[str] | None = None, closed: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "object",
        "properties": props,
        "required": list(props) if required is None else required,
    }
    if closed:
        out["additionalProperties"] = False
    return out


ADDRESS = obj({"street": S, "city": S, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}})
MONEY = obj({"amount": {"type": "number", "minimum": 0}, "currency": {"enum": ["EUR", "USD", "GBP", "CNY"]}})

CASES: list[tuple[str, dict[str, Any]]] = [
    ("Describe a person.", obj({"name": S, "age": {"type": "integer", "minimum": 0, "maximum": 130}})),
    ("Describe a book.", obj({"title": S, "author": S, "year": {"type": "integer", "minimum": 1400, "maximum": 2100}})),
    ("Give a city and its country.", obj({"city": S, "country": S})),
    ("Rate a film from 1 to 5.", obj({"film": S, "stars": {"type": "integer", "minimum": 1, "maximum": 5}})),
    ("Is the sky blue?", obj({"answer": B, "reason": S})),
    ("List three fruits.", obj({"fruits": {"type": "array", "items": S, "minItems": 3, "maxItems": 3}})),
    ("List up to five colours.", obj({"colours": {"type": "array", "items": S, "minItems": 1, "maxItems": 5}})),
    ("Pick a weekday.", obj({"day": {"enum": ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]}})),
    ("Classify the sentiment of 'I love it'.", obj({"sentiment": {"enum": ["positive", "negative", "neutral"]}})),
    ("Give an address in Paris.", obj({"name": S, "address": ADDRESS})),
    ("Give a price for a coffee.", obj({"item": S, "price": MONEY})),
    ("Give a temperature reading.", obj({"celsius": {"type": "number", "minimum": -90, "maximum": 60}})),
    ("Give a probability.", obj({"p": {"type": "number", "minimum": 0, "maximum": 1}})),
    ("Give an even number of apples.", obj({"apples": {"type": "integer", "minimum": 0, "maximum": 100}})),
    ("Give a user with an email.", obj({"user": S, "email": EMAIL})),
    ("Give an event date.", obj({"event": S, "date": {"type": "string", "format": "date"}})),
    ("Give a meeting time.", obj({"title": S, "starts": {"type": "string", "format": "date-time"}})),
    ("Give a server address.", obj({"host": S, "ip": {"type": "string", "format": "ipv4"}})),
    ("Give a record id.", obj({"id": {"type": "string", "format": "uuid"}})),
    ("Give a product code like AB-1234.", obj({"code": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{4}$"}})),
    ("Give a hex colour.", obj({"colour": {"type": "string", "pattern": "^#[0-9a-f]{6}$"}})),
    ("Give a short nickname.", obj({"nickname": {"type": "string", "minLength": 2, "maxLength": 12}})),
    ("Give a phone number.", obj({"phone": {"type": "string", "pattern": "^\\+[0-9]{8,14}$"}})),
    (
        "Describe a pet.",
        obj(
            {
                "pet": {
                    "anyOf": [obj({"kind": {"const": "dog"}, "breed": S}), obj({"kind": {"const": "cat"}, "indoor": B})]
                }
            }
        ),
    ),
    ("Give a value that is a number or a word.", obj({"value": {"anyOf": [N, S]}})),
    ("Give an optional middle name.", obj({"first": S, "middle": {"anyOf": [S, {"type": "null"}]}, "last": S})),
    (
        "Describe a shape.",
        {
            "anyOf": [
                obj({"circle": obj({"radius": {"type": "number", "minimum": 0}})}),
                obj({"square": obj({"side": {"type": "number", "minimum": 0}})}),
            ]
        },
    ),
    (
        "Describe a family of two.",
        {
            "$defs": {"person": obj({"name": S, "age": {"type": "integer", "minimum": 0, "maximum": 120}})},
            "type": "object",
            "properties": {"parent": {"$ref": "#/$defs/person"}, "child": {"$ref": "#/$defs/person"}},
            "required": ["parent", "child"],
            "additionalProperties": False,
        },
    ),
    (
        "Describe a shipment.",
        {
            "$defs": {"address": ADDRESS},
            "type": "object",
            "properties": {"from": {"$ref": "#/$defs/address"}, "to": {"$ref": "#/$defs/address"}},
            "required": ["from", "to"],
            "additionalProperties": False,
        },
    ),
    ("Give a list of tasks.", obj({"tasks": {"type": "array", "maxItems": 3, "items": obj({"title": S, "done": B})}})),
    (
        "Give a shopping list with quantities.",
        obj(
            {
                "items": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 4,
                    "items": obj({"name": S, "qty": {"type": "integer", "minimum": 1, "maximum": 20}}),
                }
            }
        ),
    ),
    (
        "Give coordinates of Paris.",
        obj(
            {
                "lat": {"type": "number", "minimum": -90, "maximum": 90},
                "lon": {"type": "number", "minimum": -180, "maximum": 180},
            }
        ),
    ),
    (
        "Give a matrix of two rows.",
        obj(
            {
                "rows": {
                    "type": "array",
                    "minItems": 2,
                    "maxItems": 2,
                    "items": {"type": "array", "items": INT, "minItems": 2, "maxItems": 2},
                }
            }
        ),
    ),
    (
        "Give the status of an order.",
        obj({"order": INT, "status": {"enum": ["pending", "shipped", "delivered"]}, "express": B}),
    ),
    ("Translate hello into French.", obj({"source": {"const": "hello"}, "french": S})),
    (
        "Give a version number.",
        obj({"version": {"type": "string", "pattern": "^[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}$"}}),
    ),
    (
        "Give a configuration.",
        obj(
            {
                "debug": B,
                "workers": {"type": "integer", "minimum": 1, "maximum": 64},
                "mode": {"enum": ["fast", "safe"]},
            }
        ),
    ),
    (
        "Give a log entry.",
        obj(
            {
                "level": {"enum": ["debug", "info", "warning", "error"]},
                "message": S,
                "code": {"type": "integer", "minimum": 100, "maximum": 599},
            }
        ),
    ),
    (
        "Give a person with optional email.",
        obj({"name": S, "email": EMAIL}, required=["name"]),
    ),
    (
        "Give tags for a photo of a beach.",
        obj(
            {
                "tags": {
                    "type": "array",
                    "items": {"type": "string", "maxLength": 20},
                    "minItems": 2,
                    "maxItems": 5,
                }
            }
        ),
    ),
    ("Give a score between 0 and 10 in halves.", obj({"score": {"type": "number", "minimum": 0, "maximum": 10}})),
    (
        "Give a recipe.",
        obj(
            {
                "name": S,
                "minutes": {"type": "integer", "minimum": 1, "maximum": 600},
                "ingredients": {"type": "array", "items": S, "minItems": 1, "maxItems": 6},
            }
        ),
    ),
    ("Answer yes or no: is water wet?", {"enum": ["yes", "no"]}),
    ("Give a number between 1 and 100.", {"type": "integer", "minimum": 1, "maximum": 100}),
    ("Give a list of three numbers.", {"type": "array", "items": N, "minItems": 3, "maxItems": 3}),
    (
        "Give a folder with its files.",
        {
            "$defs": {
                "file": obj({"name": {"type": "string", "maxLength": 32}, "bytes": {"type": "integer", "minimum": 0}}),
                "folder": obj(
                    {"name": S, "files": {"type": "array", "maxItems": 3, "items": {"$ref": "#/$defs/file"}}}
                ),
            },
            "$ref": "#/$defs/folder",
        },
    ),
    ("用 JSON 描述一个城市。", obj({"城市": S, "人口": {"type": "integer", "minimum": 0}})),
    ("给出一本中文书的书名和作者。", obj({"title": S, "author": S})),
    (
        "Give an HTTP request.",
        obj(
            {
                "method": {"enum": ["GET", "POST", "PUT", "DELETE"]},
                "path": {"type": "string", "pattern": "^/[a-z0-9/]*$"},
                "headers": {"type": "object", "additionalProperties": S, "maxProperties": 3},
            }
        ),
    ),
    (
        "Give a weather report.",
        obj(
            {
                "city": S,
                "forecast": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 3,
                    "items": obj(
                        {
                            "day": {"enum": ["today", "tomorrow", "later"]},
                            "high": {"type": "integer", "minimum": -50, "maximum": 60},
                            "rain": B,
                        }
                    ),
                },
            }
        ),
    ),
]
