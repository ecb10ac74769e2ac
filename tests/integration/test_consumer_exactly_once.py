"""The case-store consumer writes each row exactly once, through SIGKILLs and a database restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from hubstream import kafka, topics
from hubstream.progress import wait_until
from hubstream.serde import serde_for
from hubstream.settings import PROJECT_ROOT
from tests.support.events import alert
from tests.support.stack import Namespace

ALERTS = 20_000
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def publish_alerts(ns: Namespace, count: int) -> None:
    serde = serde_for(ns.settings)
    producer = kafka.producer(ns.settings, "worker")  # the worker is who writes alerts
    topic = ns.topic(topics.ALERTS)
    for n in range(count):
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
