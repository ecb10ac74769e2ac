"""Integration tests run against the real local stack started by `make up`."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from consumers.run import prepare_database
from hubstream.kafka_security import secure_bootstrap_servers
from hubstream.settings import Settings
from tests.support.stack import Namespace, namespace


def secure_port() -> int:
    return int(secure_bootstrap_servers().rsplit(":", 1)[1])


def _answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def stack() -> Settings:
    settings = Settings()
    down = [
        name
        for name, port in (
            ("Kafka", settings.kafka_port if settings.kafka_security == "plaintext" else secure_port()),
            ("PostgreSQL", settings.pg_port),
            ("schema registry", settings.registry_port),
        )
        if not _answers(port)
    ]
    if down:
        pytest.fail(f"{', '.join(down)} not answering: start the local stack with `make up`", pytrace=False)
    return settings


@pytest.fixture
def ns(stack: Settings) -> Iterator[Namespace]:
    """A fresh topic prefix and database on the real broker and server, removed afterwards."""
    with namespace(stack) as created:
        prepare_database(created.settings)
        yield created


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
