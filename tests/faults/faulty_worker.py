"""``hubstream worker`` with one handler that fails once: ``python -m tests.faults.faulty_worker worker ...``.

The handler of the topic ending in ``HUBSTREAM_FAULT_TOPIC`` (by default the missing episodes)
raises OSError, an infrastructure error and not the record's fault, on the Nth record it is
given (``HUBSTREAM_FAULT_NTH``), in the middle of a batch. Only once: the failure is remembered
in the file ``HUBSTREAM_FAULT_MARKER``, so the process its supervisor starts next runs clean.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hubstream.cli import main as hubstream_main
from streams import worker
from streams.engine import Batch, Handler, Record


def arm(handlers: dict[str, Handler], suffix: str, nth: int, marker: Path) -> str:
    [topic] = [t for t in handlers if t.endswith(suffix)]
    real = handlers[topic]
    seen = 0

    def failing(record: Record, batch: Batch) -> None:
        nonlocal seen
        seen += 1
        if seen == nth and not marker.exists():
            marker.write_text(f"{record.topic}[{record.partition}]@{record.offset}\n")
            raise OSError(f"injected fault: the disk went away at {record.topic}[{record.partition}]"
                          f"@{record.offset}, record {nth} of this handler")
        real(record, batch)

    handlers[topic] = failing
    return topic


def main() -> None:
    marker = Path(os.environ["HUBSTREAM_FAULT_MARKER"])
    nth = int(os.environ.get("HUBSTREAM_FAULT_NTH", "500"))
    suffix = os.environ.get("HUBSTREAM_FAULT_TOPIC", "missing-episodes")
    if not marker.exists():
        topic = arm(worker.HANDLERS, suffix, nth, marker)
        print(f"faulty worker: {topic} raises OSError on its record {nth}", file=sys.stderr, flush=True)
    hubstream_main()


if __name__ == "__main__":
    main()
