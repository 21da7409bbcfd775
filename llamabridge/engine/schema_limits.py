"""What a request may ask of the grammar sampler: bounds on the JSON schemas that become grammars.

A schema (a response format, Ollama's `format`, a tool's parameters) is compiled into a grammar that
llama.cpp checks every token against: its cost grows with the alternatives a position allows. An
`enum` of 100,000 values took 130 s to build and 10,000 values about 100 s per token, on a thread
nothing could cancel. The bounds are OpenAI's published limits for structured outputs, which real
schemas (Claude Code's and Codex's tools: at most 26 enum values and 82 properties in all, 9 levels
deep) stay far inside, and two measured here: optional properties (5,000 of them took 195 s and then
failed) and anyOf branches (20,000 consts: 97 s a token). Past them a request is a 400 naming the field.
The largest allowed (1,000 alternatives) builds in about 10 ms and samples at 0.2-0.9 s a token on 2
cores with a 151k-token vocabulary: a cancel takes effect within one such step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRequestError

MAX_ALTERNATIVES = 1000         # enum values and anyOf / oneOf branches in all of a request's schemas
MAX_BIG_ENUM_CHARS = 15_000     # characters of one enum of more than BIG_ENUM values
BIG_ENUM = 250
MAX_PROPERTIES = 5000           # object properties in all
MAX_OPTIONAL = 200              # optional properties of one object: llama.cpp's rules for them grow quadratically
MAX_DEPTH = 32                  # nesting of the schema documents themselves (OpenAI: 10 levels of objects)
MAX_CHARS = 120_000             # characters of property names, enum and const values and patterns in all
MAX_GRAMMAR_CHARS = 64 * 1024   # a grammar or regex given as it is (GBNF, a custom tool's regex)


@dataclass
class SchemaBudget:
    """What the schemas of one request have used so far; `check(schema, where)` adds one."""

    alternatives: int = 0
    properties: int = 0
    chars: int = 0

    def check(self, schema: Any, where: str) -> None:
        self._walk(schema, where, 0)

    def _walk(self, node: Any, where: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            _refuse(where, f"nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, list):
            for i, item in enumerate(node):
                self._walk(item, f"{where}[{i}]", depth + 1)
            return
        if not isinstance(node, dict):
            return
        enum = node.get("enum")
        if isinstance(enum, list):
            self._enum(enum, f"{where}.enum")
        for key in ("anyOf", "oneOf"):
            if isinstance(node.get(key), list):
                self._alternatives(len(node[key]), f"{where}.{key}")
        if "const" in node:
            self._chars(_text_size(node["const"]), f"{where}.const")
        if isinstance(node.get("pattern"), str):
            self._chars(len(node["pattern"]), f"{where}.pattern")
        properties = node.get("properties")
        if isinstance(properties, dict):
            self.properties += len(properties)
            if self.properties > MAX_PROPERTIES:
                _refuse(f"{where}.properties", f"makes more than {MAX_PROPERTIES} object properties in all")
            required = node.get("required")
            listed = {name for name in required if isinstance(name, str)} if isinstance(required, list) else set()
            optional = len(set(properties) - listed)
            if optional > MAX_OPTIONAL:
                _refuse(f"{where}.properties", f"has {optional} optional properties; at most {MAX_OPTIONAL} are "
                                               "accepted (list the others in `required`)")
            self._chars(sum(len(str(name)) for name in properties), f"{where}.properties")
        for key, value in node.items():
            if key not in ("enum", "const", "description", "title", "examples", "default"):
                self._walk(value, f"{where}.{key}", depth + 1)

    def _alternatives(self, n: int, where: str) -> None:
        self.alternatives += n
        if self.alternatives > MAX_ALTERNATIVES:
            _refuse(where, f"makes more than {MAX_ALTERNATIVES} enum values and anyOf / oneOf branches in all "
                           f"({n} here)")

    def _enum(self, values: list, where: str) -> None:
        self._alternatives(len(values), where)
        size = sum(_text_size(v) for v in values)
        if len(values) > BIG_ENUM and size > MAX_BIG_ENUM_CHARS:
            _refuse(where, f"holds {size} characters: an enum of more than {BIG_ENUM} values may hold at most "
                           f"{MAX_BIG_ENUM_CHARS}")
        self._chars(size, where)

    def _chars(self, n: int, where: str) -> None:
        self.chars += n
        if self.chars > MAX_CHARS:
            _refuse(where, f"takes the property names, enum and const values and patterns past {MAX_CHARS} "
                           "characters in all")


def check_grammar_text(text: str, where: str) -> None:
    """A grammar or regex a request gives as it is."""
    if len(text) > MAX_GRAMMAR_CHARS:
        _refuse(where, f"is {len(text)} characters; at most {MAX_GRAMMAR_CHARS} are accepted")


def _text_size(value: Any) -> int:
    return len(value) if isinstance(value, str) else len(str(value))


def _refuse(where: str, why: str) -> None:
    raise InvalidRequestError(f"{where}: {why}; a larger schema would make every token slow to sample for "
                              "everyone (OpenAI's structured-output limits apply)", param=where)
