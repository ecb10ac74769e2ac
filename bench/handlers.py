"""The worker's handlers alone, without the broker: CPU per event of decoding, rules and state.

    .local/venv/bin/python bench/handlers.py [--events 50000] [--schema MissingEpisodeEvent] [--profile]

The simulated county is encoded exactly as the publisher sends it (its own Publisher, with a
producer that keeps the messages instead of sending them; the schema registry of the local stack
gives the schema ids), then handed to the worker's handlers in batches as the engine would: each
source message to its topic's handler, what they forward to the re-keyed topics handled after
them, and every changed table key encoded for its changelog once per batch. No broker, no
commits, no marks: what is left is the Python the worker runs per event, so a change to a rule
or a codec shows here before any end-to-end run. ``--profile`` prints cProfile's top entries.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder would come first on the path, and its profile.py would shadow the
# standard library's (which cProfile imports): put the project root there instead.
sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import cProfile
import pstats
import time
import zlib
from collections import Counter
from typing import Any

from bench.workload import lines_of, simulated_file
from hubstream.settings import PROJECT_ROOT, load
from producers.publish import Publisher, publish_lines


class _Keeper:
    """A producer that keeps what it is given."""

    def __init__(self) -> None:
        self.kept: list[tuple[str, bytes | None, bytes]] = []

    def produce(self, topic: str, value: bytes, key: bytes | None = None, *, on_delivery: Any = None) -> None:
        self.kept.append((topic, key, value))
        if on_delivery is not None:
            on_delivery(None, None)

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


def encoded(events: int, schema: str | None) -> list[tuple[str, bytes | None, bytes]]:
    path, _ = simulated_file(PROJECT_ROOT / ".local" / "bench-cache", events)
    keeper = _Keeper()
    with Publisher(load(), producer=keeper) as publisher:
        publish_lines(load(), "mixed", lines_of(path, (schema,) if schema else None), publisher=publisher)
    return keeper.kept


def run(messages: list[tuple[str, bytes | None, bytes]], batch_size: int) -> dict[str, Any]:
    from streams.engine import Batch, Record
    from streams.worker import running, tune_gc

    tune_gc()  # as the worker does
    handlers, tables = running()
    for table in tables:
        table.partitions = {p: {} for p in range(64)}
    handled: Counter[str] = Counter()
    offsets: Counter[tuple[str, int]] = Counter()
    published_ms = int(time.time() * 1000)  # as the broker stamps a message: events are not after it

    def record(topic: str, key: bytes | None, value: bytes, partition: int | None) -> Record:
        if partition is None:
            partition = zlib.crc32(key or b"") % 6
        offsets[(topic, partition)] += 1
        return Record(topic, partition, offsets[(topic, partition)], key, value, published_ms)

    started = time.process_time()
    pending = [record(t, k, v, None) for t, k, v in messages if t in handlers]
    while pending:
        forwarded: list[Record] = []
        for start in range(0, len(pending), batch_size):
            batch = Batch()
            for rec in pending[start : start + batch_size]:
                handlers[rec.topic](rec, batch)
                handled[rec.topic] += 1
            forwarded += [record(t, k, v, p) for t, k, v, _, p in batch.outputs if t in handlers]
            for table in tables:
                table.changelog_messages()
        pending = forwarded
    cpu = time.process_time() - started
    return {"sources": len(messages), "handled": dict(handled), "cpu_s": cpu, "alerts": _alerts_by_rule()}


def _alerts_by_rule() -> dict[str, int]:
    from hubstream.metrics import ALERTS_RAISED

    raised: Counter[str] = Counter()
    for metric in ALERTS_RAISED.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                raised[sample.labels["rule"]] += int(sample.value)
    return dict(raised)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000, help="simulated events (default 50,000)")
    parser.add_argument("--schema", help="only this schema's events, e.g. MissingEpisodeEvent")
    parser.add_argument("--rules", help="run only these rules, comma-separated (hubstream worker --rules)")
    parser.add_argument("--batch", type=int, default=5000, help="messages per batch (default 5,000)")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top entries (--top)")
    parser.add_argument("--sort", default="tottime", help="cProfile order: tottime (default), cumulative")
    parser.add_argument("--top", type=int, default=40, help="cProfile entries to print (default 40)")
    args = parser.parse_args()
    messages = encoded(args.events, args.schema)
    if args.rules:
        from streams.app import select_rules

        select_rules(args.rules.split(","))
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    result = run(messages, args.batch)
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.top)
    total, cpu = sum(result["handled"].values()), result["cpu_s"]
    print(f"{result['sources']:,} source messages, {total:,} handled in all, {cpu:.2f} s CPU")
    print(f"  {result['sources'] / cpu:,.0f} source events/s, {total / cpu:,.0f} messages/s")
    for topic, n in sorted(result["handled"].items()):
        print(f"  {topic}: {n:,}")
    print("alerts: " + (", ".join(f"{rule} {n:,}" for rule, n in sorted(result["alerts"].items())) or "none"))


if __name__ == "__main__":
    main()
