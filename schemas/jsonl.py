"""The line format of event files: one JSON object per line, routed by schema name.

    {"schema": "MissingEpisodeEvent", "event": {...JSON-form event...}}

The publisher reads ``schema`` to pick the topic and Avro schema, and hands ``event`` to
``codec.from_json``. Blank lines are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from schemas.catalogue import SCHEMA_NAMES
from schemas.errors import SchemaViolation

SCHEMA_KEY = "schema"
EVENT_KEY = "event"


def format_line(name: str, event: dict[str, Any]) -> str:
    """One line (without newline) carrying a JSON-form event of schema ``name``."""
    return json.dumps({SCHEMA_KEY: name, EVENT_KEY: event}, separators=(",", ":"), ensure_ascii=False)


def parse_line(line: str) -> tuple[str, Any]:
    """(schema name, JSON-form event) from one line; the event is not yet validated."""
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise SchemaViolation("", line[:80], f"line is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise SchemaViolation("", obj, "a line must be a JSON object with 'schema' and 'event'")
    name = obj.get(SCHEMA_KEY)
    if name not in SCHEMA_NAMES:
        raise SchemaViolation(SCHEMA_KEY, name, f"expected one of {', '.join(SCHEMA_NAMES)}")
    if EVENT_KEY not in obj:
        raise SchemaViolation(EVENT_KEY, None, "line has no event")
    extra = sorted(set(obj) - {SCHEMA_KEY, EVENT_KEY})
    if extra:
        message = "unknown key on the line; expected only 'schema' and 'event'"
        raise SchemaViolation(extra[0], obj[extra[0]], message)
    return name, obj[EVENT_KEY]


def read_lines(lines: Iterable[str]) -> Iterator[tuple[int, str, Any]]:
    """(line number from 1, schema name, JSON event) for each non-blank line."""
    for number, line in enumerate(lines, start=1):
        if line.strip():
            name, event = parse_line(line)
            yield number, name, event
