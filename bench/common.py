"""What every measurement shares: its namespace, its subprocesses, and probes of Kafka and /proc.

A namespace is a topic prefix plus a database, reset when entered and removed when left, the
approach of ``hubstream demo``. Its processes get the namespace's environment, a log file each
under ``.local/bench-logs/<run>/``, and their own process group so they can be stopped cleanly.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2
from kafka import TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from tqdm import tqdm

from hubstream import kafka, kafka_security
from hubstream.kafka import create_topics
from hubstream.settings import DEFAULT_ASSIGNOR, PROJECT_ROOT, Settings

BIN = Path(sys.executable).parent
HUBSTREAM = str(BIN / "hubstream")
# quixstreams and py-spy live in their own virtualenv: see bench/README.md ("Setting up").
BENCH_VENV = Path(os.environ.get("HUBSTREAM_BENCH_VENV", str(PROJECT_ROOT / ".local" / "bench-venv")))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bar(iterable: Any = None, **kwargs: Any) -> Any:
    """A progress bar on stderr: redrawn live on a terminal, a line every 15 s into a log file."""
    live = sys.stderr.isatty()
    kwargs.setdefault("unit", " events")
    return tqdm(iterable, file=sys.stderr, leave=False, mininterval=0.2 if live else 15.0, **kwargs)


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("nan")


# -- /proc ------------------------------------------------------------------------------------


def proc_memory_kib(pid: int) -> dict[str, int]:
    """VmHWM (peak resident set) and VmRSS of a live process, in KiB; empty once it has gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(rest.split()[0])
    return out


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a live process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- Prometheus /metrics -------------------------------------------------------------------------


Sample = tuple[str, dict[str, str], float]


def scrape(port: int, timeout_s: float = 2.0) -> list[Sample]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as resp:
        text = resp.read().decode()
    return [
        (s.name, dict(s.labels), float(s.value))
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    ]


def metric_sum(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == x for k, x in labels.items()))


def histogram(samples: list[Sample], name: str, **labels: str) -> dict[str, Any]:
    """A histogram's buckets (upper bound -> cumulative count, summed over other labels), count, sum."""
    buckets: dict[float, float] = {}
    for n, lab, v in samples:
        if n == f"{name}_bucket" and all(lab.get(k) == x for k, x in labels.items()):
            le = float(lab["le"])
            buckets[le] = buckets.get(le, 0.0) + v
    return {
        "buckets": sorted(buckets.items()),
        "count": metric_sum(samples, f"{name}_count", **labels),
        "sum": metric_sum(samples, f"{name}_sum", **labels),
    }


def bucket_quantile(hist: dict[str, Any], q: float) -> float | None:
    """The upper bound of the bucket holding the q-th percentile: "at most this many seconds"."""
    count = hist["count"]
    if not count:
        return None
    wanted = q / 100 * count
    for le, cumulative in hist["buckets"]:
        if cumulative >= wanted:
            return float(le)
    return float("inf")


# -- Kafka --------------------------------------------------------------------------------------


class KafkaProbe:
    """End offsets, committed offsets and group state, over long-lived clients (cheap to poll).

    Connects as the operators' principal (admin), over whichever listener the pipeline uses.
    """

    def __init__(self, settings: Settings) -> None:
        self.admin = kafka.admin(settings)
        self.consumer = kafka.consumer(
            settings, "admin", client_id="hubstream-bench", enable_auto_commit=False
        )

    def close(self) -> None:
        self.consumer.close()
        self.admin.close()

    def partitions(self, topics: Sequence[str]) -> list[TopicPartition] | None:
        """Every partition of these topics; None while one of them does not exist yet."""
        out: list[TopicPartition] = []
        for name in topics:
            found = self.consumer.partitions_for_topic(name)
            if not found:
                self.consumer.topics()  # refreshes metadata: the topic may be new since the last look
                found = self.consumer.partitions_for_topic(name)
            if not found:
                return None
            out += [TopicPartition(name, p) for p in sorted(found)]
        return out

    def end_offsets(self, topics: Sequence[str]) -> dict[TopicPartition, int]:
        tps = self.partitions(topics)
        if tps is None:
            raise LookupError(f"a topic among {list(topics)} does not exist")
        return dict(self.consumer.end_offsets(tps))

    def total(self, topics: Sequence[str]) -> int:
        return sum(self.end_offsets(topics).values())

    def committed(self, group: str) -> dict[TopicPartition, int]:
        return {tp: o.offset for tp, o in self.admin.list_group_offsets(group).get(group, {}).items()}

    def lag(self, group: str, topics: Sequence[str]) -> tuple[int, int] | None:
        """(messages not committed yet, messages committed) on these topics; None if one is missing."""
        tps = self.partitions(topics)
        if tps is None:
            return None
        end = self.consumer.end_offsets(tps)
        committed = self.committed(group)
        done = sum(min(end[tp], committed.get(tp, 0)) for tp in tps)
        return sum(end.values()) - done, done

    def group_state(self, group: str) -> tuple[str, int]:
        info = self.admin.describe_groups([group]).get(group, {})
        return str(info.get("group_state", "")), len(info.get("members") or [])

    def wait_stable(
        self, groups: Sequence[str], *, timeout_s: float = 120.0, members: Mapping[str, int] | None = None
    ) -> None:
        """Until every group is Stable with a member (or as many as ``members`` says)."""
        deadline = time.monotonic() + timeout_s
        wanted = members or {}
        while True:
            states = {g: self.group_state(g) for g in groups}
            if all(s == "Stable" and n >= wanted.get(g, 1) for g, (s, n) in states.items()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"consumer groups not stable after {timeout_s}s: {states}")
            time.sleep(0.5)


# -- the namespace ------------------------------------------------------------------------------


def admin_sql(dsn: str, *statements: str) -> None:
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True  # CREATE/DROP DATABASE cannot run inside a transaction
        with conn.cursor() as cur:
            for sql in statements:
                cur.execute(sql)
    finally:
        conn.close()


def store_env(base: Settings, database: str) -> dict[str, str]:
    host = f"host=127.0.0.1 port={base.pg_port} dbname={database}"
    return {
        "HUBSTREAM_PG_DSN": f"{host} user=hubstream",
        "HUBSTREAM_HUB_STORE_DSN": f"{host} user=hub_store",
        "HUBSTREAM_HEALTH_STORE_DSN": f"{host} user=health_store",
    }


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class Namespace:
    """One measurement's topics, database, processes and logs. Enter it with ``namespace()``."""

    name: str
    run: str
    base: Settings
    log_dir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)  # created here, so dropped on leaving
    # Settings read the environment on every access: keep the owner's DSN from before the switch.
    admin_dsn: str = ""

    def __post_init__(self) -> None:
        self.admin_dsn = self.admin_dsn or self.base.pg_dsn

    @property
    def prefix(self) -> str:
        return f"bench-{self.name}-{self.run}."

    @property
    def database(self) -> str:
        return f"bench_{self.run}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "HUBSTREAM_TOPIC_PREFIX": self.prefix,
            "HUBSTREAM_HOME": str(self.base.home),
            **store_env(self.base, self.database),
        }

    @property
    def settings(self) -> Settings:
        return Settings()

    @property
    def worker_group(self) -> str:
        return f"{self.prefix}hubstream-worker"

    def sink_group(self, store: str) -> str:
        return f"{self.prefix}hubstream-{store}-store"

    def start(
        self, argv: Sequence[str], *, log_name: str, extra_env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / f"{self.name}-{log_name}.log").open("ab") as log:
            proc = subprocess.Popen(
                list(argv),
                env={**os.environ, **self.env, **(extra_env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=PROJECT_ROOT,
                start_new_session=True,
            )
        self.processes.append(proc)
        return proc

    def start_worker(
        self, metrics_port: int, *args: str, app_id: str | None = None, log_name: str = "worker"
    ) -> subprocess.Popen[bytes]:
        """`hubstream worker` with ``args``; ``app_id`` sets HUBSTREAM_WORKER_ID (its group)."""
        extra: dict[str, str] = {}
        if app_id:
            extra["HUBSTREAM_WORKER_ID"] = app_id
        argv = [HUBSTREAM, "worker", "--metrics-port", str(metrics_port), *args]
        return self.start(argv, log_name=log_name, extra_env=extra)

    def start_sink(
        self,
        store: str,
        metrics_port: int,
        *,
        extra_env: dict[str, str] | None = None,
        log_name: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """`hubstream consume <store>`; its group is HUBSTREAM_TOPIC_PREFIX + hubstream-<store>-store."""
        argv = [HUBSTREAM, "consume", store, "--metrics-port", str(metrics_port)]
        return self.start(argv, log_name=log_name or f"{store}-sink", extra_env=extra_env)

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop_all(self) -> None:
        for proc in reversed(self.processes):
            self.stop(proc)
        self.processes.clear()

    def create_database(self, database: str) -> None:
        admin_sql(
            self.admin_dsn,
            f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)',
            f'CREATE DATABASE "{database}"',
        )
        self.databases.append(database)

    def owns(self, name: str) -> bool:
        # quixstreams names its changelog topics after the consumer group, after its own prefix.
        return name.startswith(self.prefix) or self.prefix in name

    def remove_kafka_state(self, *, wait_s: float = 30.0) -> list[str]:
        """Delete this namespace's topics and consumer groups; return the groups left behind."""
        admin = kafka.admin(self.settings)
        try:
            mine = [t for t in admin.list_topics() if self.owns(t)]
            if mine:
                admin.delete_topics(mine)
            # The sinks are static members: they stay in the group until their session times out
            # (10 s), and a group with members cannot be deleted. So retry until it can.
            deadline = time.monotonic() + wait_s
            while True:
                groups = [str(g["group_id"]) for g in admin.list_groups() if self.owns(str(g["group_id"]))]
                if groups:
                    admin.delete_groups(groups)
                    groups = [
                        str(g["group_id"]) for g in admin.list_groups() if self.owns(str(g["group_id"]))
                    ]
                if not groups or time.monotonic() > deadline:
                    return groups
                time.sleep(1.0)
        finally:
            admin.close()

    def remove_registry_subjects(self) -> int:
        """Soft- then hard-delete the schema subjects of this namespace's topics (best effort)."""
        base = self.base.registry_url
        with urllib.request.urlopen(f"{base}/subjects", timeout=10) as resp:
            subjects = [s for s in json.loads(resp.read()) if self.owns(s)]
        for subject in subjects:
            quoted = urllib.parse.quote(subject, safe="")
            for suffix in ("", "?permanent=true"):
                req = urllib.request.Request(f"{base}/subjects/{quoted}{suffix}", method="DELETE")
                with suppress(OSError):
                    urllib.request.urlopen(req, timeout=10).close()
        return len(subjects)

    @property
    def secure(self) -> bool:
        return self.base.kafka_security != "plaintext"

    def grant(self) -> None:
        """The declared ACLs (deploy/local/kafka/acls.json) for this prefix, as the demo does."""
        if self.secure:
            admin = kafka.admin(self.settings)
            try:
                kafka_security.apply_acls(admin, self.prefix)
            finally:
                admin.close()

    def revoke(self) -> None:
        if self.secure:
            admin = kafka.admin(self.settings)
            try:
                kafka_security.remove_acls(admin, self.prefix)
            finally:
                admin.close()

    def cleanup(self) -> list[str]:
        """Stop processes, delete topics, groups, ACLs, subjects, databases, local state; return problems."""
        problems: list[str] = []
        self.stop_all()
        try:
            self.revoke()
        except Exception as exc:
            problems.append(f"kafka ACLs: {exc}")
        try:
            left = self.remove_kafka_state()
            if left:
                problems.append(f"consumer groups still there: {left}")
        except Exception as exc:
            problems.append(f"kafka topics and groups: {exc}")
        try:
            self.remove_registry_subjects()
        except Exception as exc:
            problems.append(f"registry subjects: {exc}")
        for database in self.databases:
            try:
                admin_sql(self.admin_dsn, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            except psycopg2.Error as exc:
                problems.append(f"database {database}: {exc}")
        shutil.rmtree(self.base.home / "bench-state" / self.prefix.rstrip("."), ignore_errors=True)
        return problems


_NAMESPACE = re.compile(r"^(bench-[a-z0-9]+-\d{14}\.)")


def leftover_namespaces(base: Settings, current_run: str) -> list[str]:
    """Prefixes of bench namespaces on the broker other than ``current_run``'s (killed runs')."""
    admin = kafka.admin(base)
    try:
        found = {m[1] for t in admin.list_topics() if (m := _NAMESPACE.match(t))}
    finally:
        admin.close()
    return sorted(p for p in found if not p.endswith(f"-{current_run}."))


@contextmanager
def namespace(
    name: str, run: str, base: Settings, log_dir: Path, *, database: bool = True
) -> Iterator[Namespace]:
    from consumers.run import prepare_database

    ns = Namespace(name, run, base, log_dir)
    ns.remove_kafka_state(wait_s=0)  # a reset, as the demo does: a rerun with the same run id starts clean
    with environment(ns.env):
        try:
            if database:
                ns.create_database(ns.database)
                prepare_database(ns.settings)
            create_topics(ns.settings)
            ns.grant()
            yield ns
        finally:
            problems = ns.cleanup()
            for p in problems:
                print(f"  cleanup of {ns.prefix}: {p}", file=sys.stderr)


@dataclass(frozen=True)
class Context:
    """What every measurement is given: the run id, the stack, where to log and cache, the sizes."""

    run: str
    base: Settings
    log_dir: Path
    cache_dir: Path
    events: int
    quick: bool
    latency_rate: int
    latency_seconds: int
    memory_children: int
    profile_seconds: int  # 0 = no profile
    stage_cap_s: float  # a stage still running after this long is stopped and its progress reported
    workers: int = 1  # worker processes in the end-to-end replay
    idle_first_s: float = 0.0  # the replay starts this long after the pipeline is up
    assignor: str = DEFAULT_ASSIGNOR  # hubstream worker --assignor, for the replay's workers



def store_offsets_reached(dsn: str, store: str, group: str, ends: dict[TopicPartition, int]) -> bool:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(
                f"SELECT topic, partition, next_offset FROM {store}.consumer_offsets WHERE group_id = %s",
                (group,),
            )
            stored = {TopicPartition(t, p): o for t, p, o in cur.fetchall()}
    finally:
        conn.close()
    return all(stored.get(tp, 0) >= end for tp, end in ends.items() if end > 0)


def wait_store(
    dsn: str,
    store: str,
    group: str,
    ends: dict[TopicPartition, int],
    *,
    timeout_s: float,
    every_s: float = 0.25,
) -> float:
    """Wall time at which the store's committed offsets (same transaction as its rows) reach ``ends``."""
    deadline = time.monotonic() + timeout_s
    while not store_offsets_reached(dsn, store, group, ends):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{store} store ({group}) did not reach the end offsets in {timeout_s:.0f}s")
        time.sleep(every_s)
    return time.time()


def query(dsn: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params or None)  # no parameters: a % in the SQL is a plain %
            return list(cur.fetchall())
    finally:
        conn.close()
