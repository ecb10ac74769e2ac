"""The case-store consumer writes each row exactly once, through SIGKILLs and a database restart."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from hubstream import kafka, topics
from hubstream.progress import wait_until
from hubstream.serde import serde_for
from hubstream.settings import PROJECT_ROOT
from tests.support.events import alert
from tests.support.stack import Namespace

ALERTS = 20_000
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def publish_alerts(ns: Namespace, count: int, start: int = 0) -> None:
    serde = serde_for(ns.settings)
    producer = kafka.producer(ns.settings, "worker")  # the worker is who writes alerts
    topic = ns.topic(topics.ALERTS)
    for n in range(start, start + count):
        record = alert(n, T0 + timedelta(minutes=n))
        producer.send(topic, key=record["subject"].encode(), value=serde.encode(topic, "Alert", record))
    producer.flush()
    producer.close()


def scalar(ns: Namespace, sql: str) -> int:
    with ns.owner_connection() as conn, conn.cursor() as cur:
        cur.execute(sql)
        return int(cur.fetchone()[0])


def rows(ns: Namespace) -> int:
    return scalar(ns, "SELECT count(*) FROM hub.alert_flags")


def start_consumer(ns: Namespace) -> subprocess.Popen[bytes]:
    return ns.start("consume", "hub", "--metrics-port", "0", log_name="consumer")


def assert_exactly_once(ns: Namespace) -> None:
    assert rows(ns) == ALERTS
    # Every row was written in exactly one committed transaction: one write record in the
    # access log and one history row per alert. A replayed batch would have logged twice.
    assert scalar(ns, "SELECT count(*) FROM audit.access_log WHERE action = 'write'") == ALERTS
    assert (
        scalar(ns, "SELECT count(DISTINCT record_ref) FROM audit.access_log WHERE action = 'write'") == ALERTS
    )
    assert scalar(ns, "SELECT count(*) FROM hub.alert_flag_history") == ALERTS
    assert scalar(ns, "SELECT sum(next_offset) FROM hub.consumer_offsets") == ALERTS


def test_consumer_killed_mid_batch_then_restarted_leaves_exactly_the_rows_of_a_clean_run(
    ns: Namespace,
) -> None:
    publish_alerts(ns, ALERTS)
    for kill_after in (1_000, 7_000, 13_000):
        consumer = start_consumer(ns)
        wait_until(lambda n=kill_after: rows(ns) >= n, timeout_s=120, what=f"{kill_after} rows", every_s=0.05)
        os.killpg(consumer.pid, signal.SIGKILL)
        consumer.wait()
        assert rows(ns) < ALERTS, "the kill must land before the consumer finishes"
    start_consumer(ns)
    wait_until(lambda: rows(ns) == ALERTS, timeout_s=120, what="all rows")
    time.sleep(3)  # anything written twice would show by now
    assert_exactly_once(ns)


def stack(command: str, part: str) -> None:
    subprocess.run(
        [
            sys.executable.replace("venv/bin/python", "venv/bin/python"),
            "deploy/local/stack.py",
            command,
            part,
        ],
        cwd=PROJECT_ROOT,
        check=True,
        capture_output=True,
    )


def test_database_stopped_and_started_mid_stream_loses_and_duplicates_nothing(ns: Namespace) -> None:
    publish_alerts(ns, ALERTS)
    start_consumer(ns)
    wait_until(lambda: rows(ns) >= 3_000, timeout_s=120, what="3000 rows", every_s=0.05)
    stack("down", "postgres")
    try:
        time.sleep(5)
    finally:
        stack("up", "postgres")
    wait_until(lambda: rows(ns) == ALERTS, timeout_s=180, what="all rows after the restart")
    time.sleep(3)
    assert_exactly_once(ns)


def test_a_fenced_consumer_is_replaced_and_the_sink_carries_on(ns: Namespace) -> None:
    """The coordinator fences a static member whose session lapsed (a stalled broker, say);
    librdkafka then gives that consumer up for good. The sink starts a new one, positioned from
    the database, instead of sitting idle."""
    sink = start_consumer(ns)
    publish_alerts(ns, 100)
    wait_until(lambda: rows(ns) == 100, timeout_s=60, what="the first alerts written")

    group = f"{ns.prefix}hubstream-hub-store"
    intruder = Consumer({
        **kafka.librdkafka_config(ns.settings, "hub-consumer"),
        "group.id": group,
        "group.instance.id": f"{group}@{socket.gethostname()}",  # the sink's own static identity
    })
    intruder.subscribe([ns.topic(topics.ALERTS)])
    deadline = time.monotonic() + 30
    while not intruder.assignment() and time.monotonic() < deadline:
        intruder.poll(0.2)
    intruder.close()

    # The fencing shows when the sink next speaks to the coordinator: its commit after a batch.
    log_file = Path(ns.env["HUBSTREAM_HOME"]) / "test-logs" / f"{ns.prefix}consumer.log"
    publish_alerts(ns, 100, start=100)
    wait_until(lambda: "fenced" in log_file.read_text(), timeout_s=60, what="the sink fenced")
    publish_alerts(ns, 100, start=200)
    wait_until(lambda: rows(ns) == 300, timeout_s=90, what="the alerts after the fencing written")
    assert sink.poll() is None, "the sink should still be running"
    assert "starting a new one from the database's offsets" in log_file.read_text()
    assert scalar(ns, "SELECT count(*) FROM audit.access_log WHERE action = 'write'") == 300


def test_alerts_written_in_transactions_are_stored_to_the_end_of_each_partition(ns: Namespace) -> None:
    # The worker writes alerts in transactions: each partition ends in a marker, never handed
    # to a read-committed reader. The database's offsets go past it, or a store that has
    # written every row would read as one message behind on each partition for ever.
    serde = serde_for(ns.settings)
    topic = ns.topic(topics.ALERTS)
    producer = Producer({
        **kafka.librdkafka_config(ns.settings, "worker"),
        "transactional.id": f"{ns.prefix}hubstream-worker-test",
    })
    producer.init_transactions(30)
    for batch in range(5):
        producer.begin_transaction()
        for n in range(batch * 10, batch * 10 + 10):
            record = alert(n, T0 + timedelta(minutes=n))
            producer.produce(topic, serde.encode(topic, "Alert", record), record["subject"].encode())
        producer.commit_transaction(30)
    probe = Consumer({**kafka.librdkafka_config(ns.settings, "admin"), "group.id": f"{ns.prefix}probe"})
    metadata = probe.list_topics(topic, timeout=10).topics[topic].partitions
    ends = {p: probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in metadata}
    probe.close()
    ends = {p: end for p, end in ends.items() if end > 0}

    def stored() -> dict[int, int]:
        with ns.owner_connection() as conn, conn.cursor() as cur:
            cur.execute("SELECT partition, next_offset FROM hub.consumer_offsets WHERE topic = %s", (topic,))
            return dict(cur.fetchall())

    start_consumer(ns)
    with contextlib.suppress(TimeoutError):  # the assertion below shows the difference
        wait_until(lambda: stored() == ends, timeout_s=60, what="the stored offsets at the ends")
    assert rows(ns) == 50
    assert stored() == ends
