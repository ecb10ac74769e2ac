"""Test helpers over the real local stack: isolated namespaces, subprocesses, topic readers.

Each test gets its own topic prefix and its own PostgreSQL database, so tests never see each
other's events or rows, yet all talk to the one real broker and the one real server.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import psycopg2
from confluent_kafka import Producer as ConfluentProducer
from kafka import KafkaAdminClient, TopicPartition

from hubstream import kafka, topics
from hubstream.kafka import create_topics
from hubstream.kafka_security import apply_acls, remove_acls
from hubstream.progress import wait_for_group, worker_topics
from hubstream.retry import retrying
from hubstream.serde import serde_for
from hubstream.settings import PROJECT_ROOT, Settings

HUBSTREAM = str(Path(sys.executable).parent / "hubstream")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Namespace:
    prefix: str
    database: str
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return Settings()

    def topic(self, t: topics.Topic) -> str:
        return self.prefix + t.base_name

    def owner_connection(self) -> Any:
        return psycopg2.connect(self.env["HUBSTREAM_PG_DSN"])

    def start(
        self, *args: str, log_name: str, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log_dir = Path(self.env["HUBSTREAM_HOME"]) / "test-logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log = (log_dir / f"{self.prefix}{log_name}.log").open("ab")
        proc = subprocess.Popen(
            [HUBSTREAM, *args], env={**os.environ, **self.env, **(extra_env or {})},
            stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, start_new_session=True,
        )
        self.processes.append(proc)
        return proc

    def start_worker(
        self, *args: str, name: str = "worker", app_id: str | None = None
    ) -> subprocess.Popen[bytes]:
        extra: dict[str, str] = {}
        if app_id:
            extra["HUBSTREAM_WORKER_ID"] = app_id
        return self.start("worker", "--metrics-port", "0", *args, log_name=name, extra_env=extra)

    def stop_all(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.processes.clear()


@contextmanager
def namespace(base: Settings) -> Iterator[Namespace]:
    run = uuid4().hex[:10]
    prefix = f"t{run}."
    database = f"t{run}"
    admin_dsn = base.pg_dsn
    _admin_sql(admin_dsn, f'CREATE DATABASE "{database}"')
    host = f"host=127.0.0.1 port={base.pg_port} dbname={database}"
    env = {
        "HUBSTREAM_TOPIC_PREFIX": prefix,
        "HUBSTREAM_PG_DSN": f"{host} user=hubstream",
        "HUBSTREAM_HUB_STORE_DSN": f"{host} user=hub_store",
        "HUBSTREAM_HEALTH_STORE_DSN": f"{host} user=health_store",
        "HUBSTREAM_HOME": str(base.home),
        # The local stack's single broker: one replica, one in sync (unless set otherwise).
        "HUBSTREAM_DEPLOYMENT": os.environ.get("HUBSTREAM_DEPLOYMENT") or "local",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    ns = Namespace(prefix, database, env)
    try:
        create_topics(Settings())
        _with_admin(base, lambda admin: apply_acls(admin, prefix))
        _wait_for_grants(Settings())
        yield ns
    finally:
        ns.stop_all()
        _delete_topics(base, prefix)
        _with_admin(base, lambda admin: remove_acls(admin, prefix))
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _admin_sql(admin_dsn, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _wait_for_grants(settings: Settings, timeout_s: float = 30.0) -> None:
    """Wait until fresh ACLs are in force: librdkafka clients fail at once on a denial, where
    kafka-python used to retry until the grant arrived."""
    if settings.kafka_security == "plaintext":
        return
    probes = (("police", topics.MISSING_EPISODES.name), ("worker", topics.ALERTS.name))
    for principal, topic in probes:
        client = ConfluentProducer(kafka.librdkafka_config(settings, principal))
        deadline = time.monotonic() + timeout_s
        while client.list_topics(topic, timeout=10).topics[topic].error is not None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{principal} still denied on {topic} after {timeout_s}s")
            time.sleep(0.1)


def _admin_sql(dsn: str, sql: str) -> None:
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def _with_admin(base: Settings, work: Callable[[KafkaAdminClient], object]) -> None:
    if base.kafka_security == "plaintext":
        return  # the plaintext development listener has no ACLs
    admin = kafka.admin(base)
    try:
        work(admin)
    finally:
        admin.close()


def _delete_topics(base: Settings, prefix: str) -> None:
    admin = kafka.admin(base)
    try:
        mine = [t for t in retrying("list_topics", admin.list_topics) if t.startswith(prefix)]
        if mine:
            kafka.delete_topics(admin, mine)
    finally:
        admin.close()


def read_topic(settings: Settings, topic: str, *, timeout_s: float = 10.0) -> list[Any]:
    """Every message now on ``topic`` (read from the beginning up to the end offsets)."""
    consumer = kafka.consumer(settings, enable_auto_commit=False)
    try:
        found = retrying(f"partitions_for_topic({topic!r})", lambda: consumer.partitions_for_topic(topic))
        partitions = [TopicPartition(topic, p) for p in found or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        end = retrying(f"end_offsets of {topic}", lambda: consumer.end_offsets(partitions))
        messages: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end in {timeout_s}s")
            for recs in consumer.poll(timeout_ms=500).values():
                messages.extend(recs)
        return messages
    finally:
        consumer.close()


def decoded(settings: Settings, topic: str) -> list[tuple[str, dict[str, Any]]]:
    serde = serde_for(settings)
    return [serde.decode(m.value) for m in read_topic(settings, topic)]


def wait_for_worker(ns: Namespace, group: str, *, timeout_s: float = 120.0) -> None:
    """Wait until the worker has consumed every input and re-keyed topic, stably (each lag
    lookup waits out a group coordinator still starting: hubstream.retry)."""

    def check_alive() -> None:
        for proc in ns.processes:
            if proc.poll() is not None:
                logs = f".local/test-logs/{ns.prefix}*"
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}; see {logs}")

    wait_for_group(ns.settings, group, worker_topics(group), timeout_s=timeout_s, still_running=check_alive)
