"""`engine/grammar/specs.py`: objects closed unless the schema opens them, and the JSON layout."""

from __future__ import annotations

import json

from streamchat.engine.grammar.specs import closed, json_schema


def test_objects_with_listed_properties_are_closed() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "integer"}}}}}
    out = closed(schema)
    assert out["additionalProperties"] is False
    assert out["properties"]["a"]["additionalProperties"] is False
    assert "additionalProperties" not in schema, "the schema sent is not changed"


def test_a_schema_that_opens_an_object_keeps_it_open() -> None:
    for key, value in [("additionalProperties", True), ("patternProperties", {"^x": {}}),
                       ("unevaluatedProperties", {"type": "string"})]:  # fmt: skip
        schema = {"type": "object", "properties": {"a": {}}, key: value}
        assert closed(schema)[key] == value
        assert closed(schema).get("additionalProperties", value) == value


def test_nested_schemas_everywhere_are_walked() -> None:
    inner = {"type": "object", "properties": {"x": {}}}
    schema = {"$defs": {"d": inner}, "anyOf": [inner], "items": inner, "prefixItems": [inner], "not": inner}
    out = closed(schema)
    for sub in (out["$defs"]["d"], out["anyOf"][0], out["items"], out["prefixItems"][0], out["not"]):
        assert sub["additionalProperties"] is False


def test_all_of_members_stay_open_so_they_can_merge() -> None:
    schema = {"allOf": [{"properties": {"a": {}}}, {"properties": {"b": {}}}]}
    assert closed(schema) == schema


def test_a_property_named_properties_is_a_name_not_a_keyword() -> None:
    schema = {"type": "object", "properties": {"properties": {"type": "string"}}}
    assert closed(schema)["properties"]["properties"] == {"type": "string"}


def test_user_layout_settings_win() -> None:
    grammar = json.loads(json_schema({"type": "object", "x-guidance": {"whitespace_flexible": True}}))
    layout = grammar["grammars"][0]["json_schema"]["x-guidance"]
    assert layout["whitespace_flexible"] is True and layout["item_separator"] == ", ?"
