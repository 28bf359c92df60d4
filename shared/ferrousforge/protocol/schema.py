"""Bounds on the JSON schemas requests carry (``format``, tool parameters): a grammar is built from
each, and counts such as ``maxLength: 100000`` unroll into grammars that exhaust the engine."""

from __future__ import annotations

import re

from ferrousforge.errors import BadRequest

MAX_SCHEMA_COUNT = 1000  # the largest length, item or property count a schema may ask for
COUNTS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")
_REPEAT = re.compile(r"\{\s*(\d+)\s*(?:,\s*(\d*)\s*)?\}")


def check_schema(schema: object, where: str) -> None:
    """A BadRequest naming ``where`` when the schema asks for a count above MAX_SCHEMA_COUNT."""
    pending = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        for key in COUNTS:
            value = node.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and value > MAX_SCHEMA_COUNT:
                raise BadRequest(f"{where}: '{key}' above {MAX_SCHEMA_COUNT} is not supported")
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            for low, high in _REPEAT.findall(pattern):
                if int(low) > MAX_SCHEMA_COUNT or (high and int(high) > MAX_SCHEMA_COUNT):
                    raise BadRequest(f"{where}: a repeat count above {MAX_SCHEMA_COUNT} in 'pattern'")
        pending.extend(v for v in node.values() if isinstance(v, dict | list))
