"""``hubstream worker`` whose changelog reader does not wait out the broker's fetch long-poll:
``python -m tests.support.worker_process worker ...``.

The engine reads each changelog partition back with a consumer of its own (group
``<app id>-restore``) that ends at the partition's end-of-partition event. Read committed, the
last offset of a changelog is a transaction marker, never delivered, so that event comes only
from a fetch that finds nothing, which the broker holds for librdkafka's ``fetch.wait.max.ms``
(500 ms); the next partition's offset query then waits behind that fetch on the same connection.
That is about a second per changelog partition: some fifty seconds per start of a full worker,
whatever the state holds. This runs the real CLI with only that reader's fetch wait lowered
(HUBSTREAM_TEST_RESTORE_FETCH_WAIT_MS, default 10), so that fault tests that restart workers
many times fit in the test run's time; nothing else of the engine changes.
"""

from __future__ import annotations

import os
from typing import Any

from confluent_kafka import Consumer

from hubstream.cli import main as hubstream_main
from streams import engine

WAIT_MS = int(os.environ.get("HUBSTREAM_TEST_RESTORE_FETCH_WAIT_MS", "10"))


def consumer(config: dict[str, Any]) -> Consumer:
    if str(config.get("group.id", "")).endswith("-restore"):
        config = {**config, "fetch.wait.max.ms": WAIT_MS}
    return Consumer(config)


def patch() -> None:
    setattr(engine, "Consumer", consumer)  # noqa: B010 (the engine module, patched for this process)


def main() -> None:
    patch()
    hubstream_main()


if __name__ == "__main__":
    main()
