"""Avro on the wire, with schema ids from the registry: what every process encodes and decodes with."""

from __future__ import annotations

from typing import Any

import schemas
from hubstream.settings import Settings


class Serde:
    """Encodes records for a topic (registering the schema once) and decodes any framed message."""

    def __init__(self, registry: schemas.SchemaRegistry) -> None:
        self.registry = registry
        self._ids: dict[tuple[str, str], int] = {}
        self._decoder = schemas.Decoder(registry.schema_by_id)

    def schema_id(self, topic: str, schema: str) -> int:
        key = (topic, schema)
        schema_id = self._ids.get(key)
        if schema_id is None:
            schema_id = self._ids[key] = schemas.register_schema(self.registry, topic, schema)
        return schema_id

    def encode(self, topic: str, schema: str, record: dict[str, Any]) -> bytes:
        return schemas.encode(self.schema_id(topic, schema), schema, record)

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """(schema name, record); raises schemas.DecodeError for a message that is not ours."""
        return self._decoder.decode(data)


def registry_for(settings: Settings) -> schemas.SchemaRegistry:
    return schemas.ConfluentRegistryClient(settings.registry_url)


def serde_for(settings: Settings) -> Serde:
    return Serde(registry_for(settings))
