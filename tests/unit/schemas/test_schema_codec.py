"""Confluent framing, decode failures, reading older and newer writers, and the registry client."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

import fastavro
import pytest

from schemas import (
    SCHEMA_NAMES,
    ConfluentRegistryClient,
    DecodeError,
    Decoder,
    InMemoryRegistry,
    RegistryError,
    SchemaError,
    SchemaNotFound,
    SchemaViolation,
    decode,
    encode,
    from_json,
    register_schema,
    schema_text,
    subject_for,
)
from schemas.catalogue import schema_json

Sample = Callable[[str], dict[str, Any]]


@pytest.fixture
def registry() -> InMemoryRegistry:
    reg = InMemoryRegistry(first_id=100)
    for name in SCHEMA_NAMES:
        reg.register(f"{name}-value", schema_text(name))
    return reg


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_encode_then_decode_gives_the_same_record(
    name: str, sample: Sample, registry: InMemoryRegistry
) -> None:
    record = from_json(name, sample(name))
    schema_id = registry.register(f"{name}-value", schema_text(name))
    data = encode(schema_id, name, record)
    assert data[0] == 0
    assert int.from_bytes(data[1:5], "big") == schema_id
    assert decode(data, registry.schema_by_id) == (name, record)
    assert Decoder(registry.schema_by_id).decode(data) == (name, record)


def test_short_message(registry: InMemoryRegistry) -> None:
    with pytest.raises(DecodeError, match="shorter than the 5-byte Confluent header"):
        decode(b"\x00\x00\x01", registry.schema_by_id)


def test_wrong_magic_byte(registry: InMemoryRegistry) -> None:
    with pytest.raises(DecodeError, match="magic byte is 123, expected 0"):
        decode(b'{"not": "avro"}', registry.schema_by_id)


def test_unknown_schema_id(registry: InMemoryRegistry) -> None:
    with pytest.raises(DecodeError, match="unknown schema id 7"):
        decode(b"\x00\x00\x00\x00\x07abc", registry.schema_by_id)
    with pytest.raises(DecodeError, match="unknown schema id 7"):
        Decoder(registry.schema_by_id).decode(b"\x00\x00\x00\x00\x07abc")


def test_every_truncation_of_a_message_is_a_decode_error(sample: Sample, registry: InMemoryRegistry) -> None:
    data = encode(100, "IntelligenceReport", from_json("IntelligenceReport", sample("IntelligenceReport")))
    for cut in range(5, len(data)):
        with pytest.raises(DecodeError):
            decode(data[:cut], registry.schema_by_id)


def test_trailing_bytes_are_a_decode_error(sample: Sample, registry: InMemoryRegistry) -> None:
    data = encode(100, "IntelligenceReport", from_json("IntelligenceReport", sample("IntelligenceReport")))
    with pytest.raises(DecodeError, match="1 trailing bytes"):
        decode(data + b"\x00", registry.schema_by_id)


def test_registry_outage_is_not_mistaken_for_a_bad_message(registry: InMemoryRegistry) -> None:
    def down(schema_id: int) -> str:
        raise RegistryError("connection refused")

    with pytest.raises(RegistryError):
        decode(b"\x00\x00\x00\x00\x64\x00", down)


def test_encode_of_an_invalid_record_names_the_field(sample: Sample) -> None:
    record = from_json("HubDecision", sample("HubDecision"))
    record["kind"] = "case_reopened"
    with pytest.raises(SchemaViolation) as caught:
        encode(1, "HubDecision", record)
    assert caught.value.field == "kind"


def test_schema_id_must_fit_in_four_bytes(sample: Sample) -> None:
    record = from_json("HubDecision", sample("HubDecision"))
    with pytest.raises(SchemaError, match="4 bytes"):
        encode(2**32, "HubDecision", record)


def _evolved(name: str, change: Callable[[dict[str, Any]], None]) -> str:
    schema = json.loads(json.dumps(schema_json(name)))
    change(schema)
    return json.dumps(schema)


def test_a_newer_writer_with_an_extra_field_is_read_with_the_local_schema(sample: Sample) -> None:
    def add_field(schema: dict[str, Any]) -> None:
        schema["fields"].append({"name": "school", "type": ["null", "string"], "default": None, "doc": "x"})

    newer = _evolved("HubDecision", add_field)
    reg = InMemoryRegistry()
    newer_id = reg.register("HubDecision-value", newer)
    record = from_json("HubDecision", sample("HubDecision"))
    buf = io.BytesIO()
    buf.write(b"\x00" + newer_id.to_bytes(4, "big"))
    fastavro.schemaless_writer(buf, fastavro.parse_schema(json.loads(newer)), {**record, "school": "x"})
    assert decode(buf.getvalue(), reg.schema_by_id) == ("HubDecision", record)


def test_an_older_writer_without_a_defaulted_field_gets_the_default(sample: Sample) -> None:
    def drop_resolves(schema: dict[str, Any]) -> None:
        schema["fields"] = [f for f in schema["fields"] if f["name"] != "resolves"]

    older = _evolved("Alert", drop_resolves)
    reg = InMemoryRegistry()
    older_id = reg.register("Alert-value", older)
    record = from_json("Alert", sample("Alert"))
    buf = io.BytesIO()
    buf.write(b"\x00" + older_id.to_bytes(4, "big"))
    old_record = {k: v for k, v in record.items() if k != "resolves"}
    fastavro.schemaless_writer(buf, fastavro.parse_schema(json.loads(older)), old_record)
    name, decoded = decode(buf.getvalue(), reg.schema_by_id)
    assert (name, decoded) == ("Alert", record)


def test_a_registry_schema_that_is_not_avro_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="not a usable Avro record schema"):
        decode(b"\x00\x00\x00\x00\x01\x00", lambda _id: "this is not json")


def test_in_memory_registry_gives_the_same_id_for_the_same_schema() -> None:
    reg = InMemoryRegistry()
    first = register_schema(reg, "hubstream.alerts", "Alert")
    assert register_schema(reg, "hubstream.alerts.police", "Alert") == first
    assert reg.subjects == {"hubstream.alerts-value": [first], "hubstream.alerts.police-value": [first]}
    with pytest.raises(SchemaNotFound):
        reg.schema_by_id(first + 1)


def test_subject_naming_is_topic_name_strategy() -> None:
    assert subject_for("hubstream.missing-episodes") == "hubstream.missing-episodes-value"


# --- the REST client against a small in-process stand-in for the registry's HTTP API ---------


class _FakeRegistryHandler(BaseHTTPRequestHandler):
    schemas: ClassVar[dict[int, str]] = {}
    requests: ClassVar[list[tuple[str, str, Any]]] = []

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: Any) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(("POST", self.path, body))
        schema_id = next((i for i, s in self.schemas.items() if s == body["schema"]), len(self.schemas) + 1)
        self.schemas[schema_id] = body["schema"]
        self._answer(200, {"id": schema_id})

    def do_GET(self) -> None:
        self.requests.append(("GET", self.path, None))
        schema_id = int(self.path.rsplit("/", 1)[-1])
        if schema_id in self.schemas:
            self._answer(200, {"schema": self.schemas[schema_id]})
        else:
            self._answer(404, {"error_code": 40403, "message": "Schema not found"})


@pytest.fixture
def registry_url() -> Iterator[str]:
    _FakeRegistryHandler.schemas = {}
    _FakeRegistryHandler.requests = []
    server = HTTPServer(("127.0.0.1", 0), _FakeRegistryHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/apis/ccompat/v7/"
    finally:
        server.shutdown()
        server.server_close()


def test_confluent_client_registers_and_fetches(registry_url: str) -> None:
    client = ConfluentRegistryClient(registry_url)
    schema_id = client.register("hubstream.alerts-value", schema_text("Alert"))
    fresh = ConfluentRegistryClient(registry_url)
    assert fresh.schema_by_id(schema_id) == schema_text("Alert")
    assert fresh.schema_by_id(schema_id) == schema_text("Alert")  # second read from cache
    method, path, body = _FakeRegistryHandler.requests[0]
    assert (method, path) == ("POST", "/apis/ccompat/v7/subjects/hubstream.alerts-value/versions")
    assert body == {"schemaType": "AVRO", "schema": schema_text("Alert")}
    assert [r[0] for r in _FakeRegistryHandler.requests] == ["POST", "GET"]


def test_confluent_client_unknown_id_is_a_lookup_error(registry_url: str) -> None:
    client = ConfluentRegistryClient(registry_url)
    with pytest.raises(SchemaNotFound):
        client.schema_by_id(42)
    with pytest.raises(DecodeError, match="unknown schema id 42"):
        decode(b"\x00\x00\x00\x00\x2a\x00", client.schema_by_id)


def test_confluent_client_unreachable_registry_is_a_registry_error() -> None:
    client = ConfluentRegistryClient("http://127.0.0.1:9/", timeout=2)
    with pytest.raises(RegistryError, match="failed"):
        client.schema_by_id(1)
