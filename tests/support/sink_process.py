"""A case-store sink run as its own process, for tests that pause one sink and start another.

    python -m tests.support.sink_process health --instance a [--pause-before EVENT_ID]

Two sinks of one group on one host need their own static identities (``--instance``). With
``--pause-before``, the process stops itself (SIGSTOP, every thread of it, as a long GC pause or
a stalled VM would) as it commits the first batch that holds that event, before any statement of
that transaction (offsets or rows) reaches the database; SIGCONT carries on from there. The
session is short so a paused sink's partitions move to the other one within seconds.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from consumers.run import STORES, build_sink, prepare_database
from hubstream.settings import Settings

SESSION_TIMEOUT_MS = 6_000  # the broker's group.min.session.timeout.ms

log = logging.getLogger("sink_process")


class PauseBefore:
    """The sink's own commit, run after stopping the process if the batch holds ``event_id``."""

    def __init__(self, commit: Callable[[Any], float], event_id: str) -> None:
        self.commit = commit
        self.event_id = event_id
        self.paused = False

    def __call__(self, batch: Any) -> float:
        if not self.paused and any(d.record.get("event_id") == self.event_id for d in batch.decoded):
            self.paused = True
            log.info("pausing before writing %s", self.event_id)
            # Sent to this thread, the stop takes hold before the call returns; sent to the
            # process, another thread may take it a moment later, with this one already writing.
            signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
            log.info("resumed; writing the batch of %s", self.event_id)
        return self.commit(batch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("store", choices=sorted(STORES))
    parser.add_argument("--instance", required=True)
    parser.add_argument("--pause-before", default=None, metavar="EVENT_ID")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    settings = Settings()
    prepare_database(settings)
    group = f"{os.environ.get('HUBSTREAM_TOPIC_PREFIX', '')}hubstream-{args.store}-store"
    sink = build_sink(
        settings, args.store, instance_id=f"{group}@{args.instance}",
        consumer_config={"session.timeout.ms": SESSION_TIMEOUT_MS, "heartbeat.interval.ms": 500},
    )
    if args.pause_before:
        sink._commit = PauseBefore(sink._commit, args.pause_before)  # type: ignore[method-assign]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    stats = sink.run(lambda: stopping)
    log.info("stopped: %d rows, %d batches", stats.rows, stats.batches)
    return 0


if __name__ == "__main__":
    sys.exit(main())
