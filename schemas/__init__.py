"""Avro contracts of hubstream: the .avsc catalogue, validation, JSON form, wire codec, registry."""

from schemas.catalogue import SCHEMA_NAMES, parsed_schema, schema_text
from schemas.codec import Decoder, decode, encode, from_json, to_json, validate
from schemas.errors import (
    DecodeError,
    RegistryError,
    SchemaError,
    SchemaNotFound,
    SchemaViolation,
    UnknownSchema,
)
from schemas.registry import (
    ConfluentRegistryClient,
    InMemoryRegistry,
    SchemaRegistry,
    register_schema,
    subject_for,
)

__all__ = [
    "SCHEMA_NAMES",
    "ConfluentRegistryClient",
    "DecodeError",
    "Decoder",
    "InMemoryRegistry",
    "RegistryError",
    "SchemaError",
    "SchemaNotFound",
    "SchemaRegistry",
    "SchemaViolation",
    "UnknownSchema",
    "decode",
    "encode",
    "from_json",
    "parsed_schema",
    "register_schema",
    "schema_text",
    "subject_for",
    "to_json",
    "validate",
]
