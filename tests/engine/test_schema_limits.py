"""The bounds on schemas that become grammars: real clients' tools pass, a hostile schema is refused by name."""

import json

import pytest

from llamabridge.engine.request import ChatRequest
from llamabridge.engine.schema_limits import MAX_ALTERNATIVES, MAX_OPTIONAL, SchemaBudget
from llamabridge.errors import InvalidRequestError

from ..support import FIXTURES

HI = [{"role": "user", "content": "Hi"}]


def enum(n: int, width: int = 4) -> dict:
    return {"type": "object", "properties": {"v": {"enum": [f"v{i:0{width}d}" for i in range(n)]}}, "required": ["v"]}


def refusal(schema, **request) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as info:
        ChatRequest(HI, json_schema=schema, **request).check_grammar_bounds()
    return info.value


@pytest.mark.parametrize("fixture", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_real_clients_tools_are_within_the_bounds(fixture):
    body = json.loads((FIXTURES / fixture).read_text())
    body = body.get("body", body)
    budget = SchemaBudget()
    for i, tool in enumerate(body.get("tools") or []):
        budget.check(tool.get("input_schema") or tool.get("parameters") or {}, f"tools[{i}]")
    assert budget.alternatives < MAX_ALTERNATIVES // 10


def test_the_largest_allowed_schemas_pass():
    ChatRequest(HI, json_schema=enum(MAX_ALTERNATIVES)).check_grammar_bounds()
    props = {f"p{i}": {"type": "integer"} for i in range(MAX_OPTIONAL)}
    ChatRequest(HI, json_schema={"type": "object", "properties": props}).check_grammar_bounds()


def test_a_huge_enum_is_refused_naming_the_field():
    err = refusal(enum(100_000), json_schema_field="response_format.json_schema.schema")
    assert err.param == "response_format.json_schema.schema.properties.v.enum"
    assert "1000 enum values" in err.message
    assert "15000" in refusal(enum(300, width=60)).message            # a big enum of long values


def test_alternatives_optional_properties_depth_and_size_are_bounded():
    assert refusal({"anyOf": [{"const": f"v{i}"} for i in range(2000)]}).param == "json_schema.anyOf"
    many = {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(MAX_OPTIONAL + 1)}}
    assert "optional properties" in refusal(many).message
    many["required"] = list(many["properties"])
    ChatRequest(HI, json_schema=many).check_grammar_bounds()          # required ones are cheap
    deep: dict = {"type": "string"}
    for _ in range(40):
        deep = {"type": "array", "items": deep}
    assert "deeper" in refusal(deep).message
    assert "characters" in refusal({"type": "string", "pattern": "a" * 130_000}).message


def test_tool_parameters_are_counted_together_and_named_by_tool():
    tools = [{"type": "function", "function": {"name": f"t{i}", "parameters": enum(400)}} for i in range(3)]
    with pytest.raises(InvalidRequestError) as info:
        ChatRequest(HI, tools=tools).check_grammar_bounds()
    assert info.value.param == "tools[2] (t2).parameters.properties.v.enum"
