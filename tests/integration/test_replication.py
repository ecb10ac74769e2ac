"""Replication per deployment, on the real single local broker.

The namespace runs as the local stack (HUBSTREAM_DEPLOYMENT=local: one replica, one in sync).
Configured for two replicas, which one broker cannot hold, `hubstream topics create` and the
worker refuse to start, naming each topic, its replication and the setting.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

from kafka.admin import ConfigResource

from hubstream import kafka, topics
from hubstream.retry import retrying
from tests.support.stack import HUBSTREAM, Namespace, wait_for_worker

TWO_REPLICAS = {"HUBSTREAM_REPLICATION_FACTOR": "2"}


def _describe(ns: Namespace, names: list[str]) -> dict[str, tuple[int, dict[str, str]]]:
    """Each topic's fewest replicas over its partitions, and its topic-level (dynamic) configs."""
    admin = kafka.admin(ns.settings)
    try:
        described = retrying("describe_topics", lambda: admin.describe_topics(names))
        configs = retrying(
            "describe_configs", lambda: admin.describe_configs([ConfigResource("TOPIC", n) for n in names])
        )["topic"]
    finally:
        admin.close()
    return {
        t["name"]: (
            min(len(p["replica_nodes"]) for p in t["partitions"]),
            {k: v["value"] for k, v in configs[t["name"]].items()
             if v["config_source"] == "DYNAMIC_TOPIC_CONFIG"},
        )
        for t in described
    }


def _topics_with(ns: Namespace, prefix: str) -> list[str]:
    admin = kafka.admin(ns.settings)
    try:
        return sorted(t for t in retrying("list_topics", admin.list_topics) if t.startswith(prefix))
    finally:
        admin.close()


def _topics_create(ns: Namespace, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HUBSTREAM, "topics", "create"], env={**os.environ, **ns.env, **env},
        capture_output=True, text=True, timeout=120,
    )


def _worker_refused(ns: Namespace, name: str) -> str:
    """Start a worker configured for two replicas; wait for it to exit 1; return its log."""
    proc = ns.start("worker", "--metrics-port", "0", log_name=name, extra_env=TWO_REPLICAS)
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError("the worker started on a cluster that cannot hold its replicas") from None
    log = (Path(ns.env["HUBSTREAM_HOME"]) / "test-logs" / f"{ns.prefix}{name}.log").read_text()
    assert code == 1, log
    return log


def test_topics_are_created_with_the_local_stacks_one_replica_and_min_insync_one(ns: Namespace) -> None:
    catalogued = [ns.topic(t) for t in topics.ALL]  # made by the namespace, as `make up` makes them
    described = _describe(ns, catalogued)
    assert sorted(described) == sorted(catalogued)
    for name, (replicas, config) in described.items():
        assert (replicas, config.get("min.insync.replicas")) == (1, "1"), name


def test_topics_create_refuses_two_replicas_on_one_broker(ns: Namespace) -> None:
    fresh = f"{ns.prefix}r2."  # nothing exists under it: every topic would have to be created
    run = _topics_create(ns, HUBSTREAM_TOPIC_PREFIX=fresh, **TWO_REPLICAS)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    for t in topics.ALL:
        assert (
            f"topic {fresh}{t.base_name} cannot be created with 2 replicas (HUBSTREAM_REPLICATION_FACTOR=2): "
            "the cluster has 1 broker"
        ) in run.stderr, run.stderr
    assert _topics_with(ns, fresh) == []

    # the namespace's own topics exist with one replica each: too few for two
    run = _topics_create(ns, **TWO_REPLICAS)
    assert run.returncode == 1, run.stdout + run.stderr
    for t in topics.ALL:
        assert (
            f"topic {ns.topic(t)} has 1 replica per partition, fewer than HUBSTREAM_REPLICATION_FACTOR=2"
        ) in run.stderr, run.stderr

    # and as the local stack, it goes through
    run = _topics_create(ns)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_worker_refuses_two_replicas_on_one_broker(ns: Namespace) -> None:
    log = _worker_refused(ns, "worker-r2")
    changelog = re.compile(
        rf"topic {re.escape(ns.prefix)}hubstream-worker-\S+-changelog cannot be created with 2 replicas "
        r"\(HUBSTREAM_REPLICATION_FACTOR=2\): the cluster has 1 broker"
    )
    assert changelog.search(log), log
    # the catalogued topics it reads and writes are checked too
    assert f"topic {ns.topic(topics.ALERTS)} has 1 replica per partition" in log, log
    assert "Traceback" not in log, log
    assert _topics_with(ns, f"{ns.prefix}hubstream-worker") == []


def test_the_worker_refuses_a_changelog_with_fewer_replicas_than_configured(ns: Namespace) -> None:
    group = f"{ns.prefix}hubstream-worker"
    ns.start_worker(name="worker-r1")
    deadline = time.monotonic() + 90
    while not (changelogs := [t for t in _topics_with(ns, group) if t.endswith("-changelog")]):
        assert time.monotonic() < deadline, "the worker made no changelog"
        time.sleep(0.5)
    wait_for_worker(ns, group)
    ns.stop_all()
    for name, (replicas, config) in _describe(ns, changelogs).items():
        assert (replicas, config.get("min.insync.replicas"), config.get("cleanup.policy")) == (
            1, "1", "compact"), name

    log = _worker_refused(ns, "worker-r2")
    for name in changelogs:
        refused = f"topic {name} has 1 replica per partition, fewer than HUBSTREAM_REPLICATION_FACTOR=2"
        assert refused in log, log
