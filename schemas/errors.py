"""Exceptions of the schemas package, under one root so callers can catch the family."""

from __future__ import annotations

from typing import Any


class SchemaError(Exception):
    """Root of every error this package raises."""


class UnknownSchema(SchemaError, LookupError):
    """A schema name that is not in the catalogue."""

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        self.name = name
        super().__init__(f"unknown schema {name!r}; known schemas: {', '.join(known)}")


class SchemaViolation(SchemaError, ValueError):
    """A record (or JSON event) that breaks its schema or a domain rule.

    ``field`` is a dotted path such as ``grading.handling_conditions`` or ``persons[1].nhs_number``
    (empty for the record as a whole); ``value`` is the offending value as found.
    """

    def __init__(self, field: str, value: Any, message: str) -> None:
        self.field = field
        self.value = value
        self.message = message
        where = field or "<record>"
        super().__init__(f"{where}: {message} (got {_short_repr(value)})")


class DecodeError(SchemaError, ValueError):
    """Bytes that cannot be decoded as a Confluent-framed Avro message."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class RegistryError(SchemaError):
    """The schema registry could not be reached or refused a request."""


class SchemaNotFound(RegistryError, LookupError):
    """The registry has no schema under the given id."""

    def __init__(self, schema_id: int) -> None:
        self.schema_id = schema_id
        super().__init__(f"schema id {schema_id} is not registered")


def _short_repr(value: Any, limit: int = 80) -> str:
    # Long narratives or byte blobs would swamp the message; the field path says where to look.
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
