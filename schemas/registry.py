"""The schema registry behind one small interface, and a client for Confluent-compatible APIs."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Protocol

from schemas.catalogue import schema_text
from schemas.errors import RegistryError, SchemaNotFound

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class _Transient(Exception):
    """A failure worth retrying: the registry unreachable or answering 5xx."""


def subject_for(topic: str) -> str:
    """TopicNameStrategy: the value schema of ``topic`` is registered under ``<topic>-value``."""
    return f"{topic}-value"


class SchemaRegistry(Protocol):
    def register(self, subject: str, schema_json: str) -> int:
        """Register (or find) the Avro schema under subject and return its global id."""
        ...

    def schema_by_id(self, schema_id: int) -> str:
        """The schema's JSON text; raises SchemaNotFound (a LookupError) for an unknown id."""
        ...


class InMemoryRegistry:
    """A registry in a dict, for tests and offline runs. Same schema text, same id."""

    def __init__(self, first_id: int = 1) -> None:
        self._next = first_id
        self._ids: dict[str, int] = {}
        self._texts: dict[int, str] = {}
        self.subjects: dict[str, list[int]] = {}

    def register(self, subject: str, schema_json: str) -> int:
        schema_id = self._ids.get(schema_json)
        if schema_id is None:
            schema_id = self._ids[schema_json] = self._next
            self._texts[schema_id] = schema_json
            self._next += 1
        versions = self.subjects.setdefault(subject, [])
        if schema_id not in versions:
            versions.append(schema_id)
        return schema_id

    def schema_by_id(self, schema_id: int) -> str:
        try:
            return self._texts[schema_id]
        except KeyError:
            raise SchemaNotFound(schema_id) from None


class ConfluentRegistryClient:
    """Client for the Confluent schema registry REST API (also served by Apicurio's ccompat API).

    Schemas are immutable once registered, so lookups by id are cached for the process's life.
    """

    def __init__(self, url: str, timeout: float = 10.0, attempts: int = 6) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.attempts = attempts
        self._by_id: dict[int, str] = {}
        self._registered: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def register(self, subject: str, schema_json: str) -> int:
        key = (subject, schema_json)
        cached = self._registered.get(key)
        if cached is not None:
            return cached
        path = f"/subjects/{urllib.parse.quote(subject, safe='')}/versions"
        body = self._request("POST", path, {"schemaType": "AVRO", "schema": schema_json})
        schema_id = body.get("id")
        if not isinstance(schema_id, int):
            raise RegistryError(f"registry answered POST {path} without an integer id: {body!r}")
        with self._lock:
            self._registered[key] = schema_id
            self._by_id.setdefault(schema_id, schema_json)
        return schema_id

    def schema_by_id(self, schema_id: int) -> str:
        cached = self._by_id.get(schema_id)
        if cached is not None:
            return cached
        body = self._request("GET", f"/schemas/ids/{int(schema_id)}", None, not_found_id=schema_id)
        text = body.get("schema")
        if not isinstance(text, str):
            raise RegistryError(f"registry answered schema id {schema_id} without a schema: {body!r}")
        with self._lock:
            self._by_id[schema_id] = text
        return text

    def _request(
        self, method: str, path: str, payload: Any, not_found_id: int | None = None
    ) -> dict[str, Any]:
        # A registry restart, or its database restarting under it, shows as refused connections
        # or 5xx answers for a few seconds: wait those out rather than fail a publish or a decode.
        delay = 0.25
        for attempt in range(1, self.attempts + 1):
            try:
                return self._request_once(method, path, payload, not_found_id)
            except _Transient as exc:
                if attempt == self.attempts:
                    raise RegistryError(str(exc)) from None
                time.sleep(delay)
                delay = min(delay * 2, 4.0)
        raise AssertionError("unreachable")

    def _request_once(
        self, method: str, path: str, payload: Any, not_found_id: int | None
    ) -> dict[str, Any]:
        data = None if payload is None else json.dumps(payload).encode("utf-8")
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": CONTENT_TYPE, "Accept": CONTENT_TYPE},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")[:500]
            if exc.code == 404 and not_found_id is not None:
                raise SchemaNotFound(not_found_id) from None
            message = f"{method} {self.url + path} failed with HTTP {exc.code}: {detail}"
            if exc.code >= 500:
                raise _Transient(message) from None
            raise RegistryError(message) from None
        except (urllib.error.URLError, OSError) as exc:
            raise _Transient(f"{method} {self.url + path} failed: {exc}") from None
        try:
            body = json.loads(raw)
        except ValueError:
            raise RegistryError(f"{method} {self.url + path} answered with non-JSON: {raw[:200]!r}") from None
        if not isinstance(body, dict):
            raise RegistryError(f"{method} {self.url + path} answered with {body!r}, expected an object")
        return body


def register_schema(registry: SchemaRegistry, topic: str, name: str) -> int:
    """Register the catalogue schema ``name`` as the value schema of ``topic``; returns its id."""
    return registry.register(subject_for(topic), schema_text(name))
