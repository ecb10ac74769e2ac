"""Fault-injection tests: the whole pipeline on the real stack, one fault each."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.conftest import ns, stack
from tests.support.faults import Harness
from tests.support.stack import Namespace

__all__ = ["harness", "ns", "stack"]


@pytest.fixture
def harness(ns: Namespace) -> Iterator[Harness]:
    """The test's supervised processes, stopped before its namespace is removed."""
    h = Harness(ns)
    try:
        yield h
    finally:
        h.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "faults" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.faults)
