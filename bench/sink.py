"""The hub sink alone: drain a backlog of alerts into a fresh store (rows/s), then lone-message latency.

    .local/venv/bin/python bench/sink.py --alerts 100000 [--repeat 3] [--lone 20] [--profile FILE]

Each run gets its own topic prefix, database and ACLs (``tests.support.stack.namespace``),
publishes ``--alerts`` record-form Alerts to the alerts topic as the worker would, then runs the
hub sink in this process (``consumers.run.run_sink``, the code behind ``hubstream consume hub``)
until its offsets in the database reach the end of the topic.

Drain rate: the sink's rate between its first and last committed transaction, from the access
log (one row per record, stamped with its transaction's start): (rows - first transaction's
rows) / (last transaction's time - first's), so group join and start-up are left out, as in
``bench/e2e.py``'s ``consumer_drain``. The wall time from start to the last row is printed too.

Lone-message latency: with the backlog drained, alerts are published one at a time, a pause
apart; each is timed from just before the send to the moment its row is visible to another
connection (polled every 2 ms).
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
import statistics
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from consumers.run import prepare_database, run_sink
from hubstream import kafka, topics
from hubstream.serde import serde_for
from hubstream.settings import Settings
from tests.support.events import alert
from tests.support.stack import Namespace, namespace

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def publish(ns: Namespace, first: int, count: int) -> None:
    """Alerts ``first`` .. ``first + count - 1``, keyed by subject, as the worker publishes them."""
    serde = serde_for(ns.settings)
    producer = kafka.producer(ns.settings, "worker", linger_ms=20)
    topic = ns.topic(topics.ALERTS)
    for n in range(first, first + count):
        record = alert(n, T0 + timedelta(minutes=n))
        producer.send(topic, key=record["subject"].encode(), value=serde.encode(topic, "Alert", record))
    producer.flush()
    producer.close()


def scalar(conn: Any, sql: str, params: tuple[Any, ...] = ()) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql, params or None)
        row = cur.fetchone()
        conn.rollback()  # end the snapshot, so the next poll sees newer commits
        return row[0] if row else None


class Watcher(threading.Thread):
    """Waits for the backlog to land, then times lone messages, then stops the sink."""

    def __init__(self, ns: Namespace, alerts: int, lone: int, pause_s: float) -> None:
        super().__init__(daemon=True)
        self.ns, self.alerts, self.lone, self.pause_s = ns, alerts, lone, pause_s
        self.stop = threading.Event()
        self.drained_at: float | None = None
        self.latencies: list[float] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._watch()
        except BaseException as exc:  # reported by the main thread
            self.error = exc
        finally:
            self.stop.set()

    def _watch(self) -> None:
        conn = self.ns.owner_connection()
        try:
            offsets = "SELECT coalesce(sum(next_offset), 0) FROM hub.consumer_offsets"
            while scalar(conn, offsets) < self.alerts:
                time.sleep(0.02)
            self.drained_at = time.perf_counter()
            serde = serde_for(self.ns.settings)
            producer = kafka.producer(self.ns.settings, "worker", linger_ms=0)
            topic = self.ns.topic(topics.ALERTS)
            try:
                for i in range(self.lone):
                    time.sleep(self.pause_s)
                    record = alert(self.alerts + i, T0 + timedelta(minutes=self.alerts + i))
                    value = serde.encode(topic, "Alert", record)
                    sent = time.perf_counter()
                    producer.send(topic, key=record["subject"].encode(), value=value)
                    producer.flush()
                    visible = "SELECT 1 FROM hub.alert_flags WHERE alert_id = %s"
                    while not scalar(conn, visible, (record["alert_id"],)):
                        time.sleep(0.002)
                    self.latencies.append(time.perf_counter() - sent)
            finally:
                producer.close()
        finally:
            conn.close()


def one_run(alerts: int, lone: int, pause_s: float, profile: str | None) -> dict[str, Any]:
    with namespace(Settings()) as ns:
        prepare_database(ns.settings)
        started = time.perf_counter()
        publish(ns, 0, alerts)
        print(f"published {alerts} alerts in {time.perf_counter() - started:.1f}s", flush=True)
        watcher = Watcher(ns, alerts, lone, pause_s)
        watcher.start()
        started = time.perf_counter()
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        run_sink(ns.settings, "hub", should_stop=watcher.stop.is_set)
        if profiler and profile:
            profiler.disable()
            profiler.dump_stats(profile)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        watcher.join()
        if watcher.error:
            raise watcher.error
        with ns.owner_connection() as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT count(*), min(at), max(at), count(DISTINCT at),"
                " count(*) FILTER (WHERE at = (SELECT min(at) FROM audit.access_log))"
                " FROM audit.access_log WHERE action = 'write' AND record_ref < %s",
                (f"{alerts:032x}",),
            )
            rows, first_at, last_at, transactions, first_rows = cur.fetchone()
            cur.execute("SELECT count(*) FROM hub.alert_flag_history")
            (history,) = cur.fetchone()
        span = (last_at - first_at).total_seconds()
        assert rows == alerts and history == alerts + lone, (rows, history)
        return {
            "rows": rows,
            "transactions": transactions,
            "rows_per_s": (rows - first_rows) / span if transactions > 1 and span > 0 else float("nan"),
            "wall_s": (watcher.drained_at or started) - started,
            "lone_ms": [1000 * s for s in watcher.latencies],
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--alerts", type=int, default=100_000, help="backlog size")
    parser.add_argument("--repeat", type=int, default=1, help="runs, each in a fresh namespace")
    parser.add_argument("--lone", type=int, default=20, help="lone messages timed after the drain")
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between lone messages")
    parser.add_argument("--profile", help="cProfile the sink (first run) into this file")
    args = parser.parse_args()
    rates: list[float] = []
    lone: list[float] = []
    for i in range(args.repeat):
        result = one_run(args.alerts, args.lone, args.pause, args.profile if i == 0 else None)
        rates.append(result["rows_per_s"])
        lone += result["lone_ms"]
        lat = result["lone_ms"]
        lone_text = f"; lone message median {statistics.median(lat):.0f} ms, max {max(lat):.0f} ms"
        print(
            f"run {i + 1}: {result['rows']} rows in {result['transactions']} transactions,"
            f" {result['rows_per_s']:,.0f} rows/s (wall {result['wall_s']:.1f}s from start)"
            + (lone_text if lat else ""),
            flush=True,
        )
    print(f"drain rows/s: best {max(rates):,.0f}, worst {min(rates):,.0f}, runs {len(rates)}")
    if lone:
        print(
            f"lone message ms: median {statistics.median(lone):.0f}, max {max(lone):.0f}, n {len(lone)}"
        )


if __name__ == "__main__":
    main()
