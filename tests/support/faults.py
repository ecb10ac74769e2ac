"""Fault-injection support: a seeded county published continuously, a supervisor that restarts
a process whenever it exits, committed reads of the outputs, and the checks every fault test ends
with (alerts on the topics and rows in the store against the reference run, no partition stuck).

Everything runs against the real broker and server (tests/support/stack.py namespaces).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from hubstream import topics
from hubstream.kafka import librdkafka_config
from hubstream.progress import lag, wait_for_group, wait_until, worker_topics
from hubstream.serde import serde_for
from hubstream.settings import PROJECT_ROOT, Settings
from producers.publish import Publisher, publish_lines
from producers.simulate import simulate
from tests.support.events import missing
from tests.support.reference import reference_alerts
from tests.support.stack import HUBSTREAM, Namespace

Event = tuple[str, dict[str, Any]]
INTERVIEW_HOURS = 72
WORKER_SESSION = ("--session-timeout", "6")  # the broker's group.min.session.timeout.ms
REPORT = PROJECT_ROOT / ".local" / "faults-report.txt"


# -- the county ----------------------------------------------------------------------------


def county(seed: int = 11, days: int = 300, children: int = 250) -> list[Event]:
    """A simulated county whose alerts do not depend on the watermark, as reference_alerts needs.

    Every return interview is on time or never: the simulator's late ones (after the 72 hours)
    are dropped. And the history ends with a tail of first episodes of other children, five days
    after the county's last day, across every partition: each partition's watermark then passes
    every interview deadline plus out_of_order_hours, so every overdue alert the reference raises
    at the end falls due in the worker too.
    """
    events = list(simulate(seed, date(2025, 1, 1), days, children=children))
    returned: dict[str, datetime] = {}
    for schema, e in events:
        if schema == "MissingEpisodeEvent" and e["kind"] == "found_or_returned":
            returned.setdefault(e["episode_id"], datetime.fromisoformat(e["occurred_at"]))
    kept: list[Event] = []
    for schema, e in events:
        if schema == "MissingEpisodeEvent" and e["kind"] == "return_interview":
            back = returned.get(e["episode_id"])
            deadline = back + timedelta(hours=INTERVIEW_HOURS) if back else None
            if deadline is None or datetime.fromisoformat(e["occurred_at"]) > deadline:
                continue
        kept.append((schema, e))
    end = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(days=days + 5)
    # 120 children: the chance that one of the six partitions gets none of them is 6 * (5/6)**120.
    kept += [
        ("MissingEpisodeEvent",
         missing(f"pk_tail{n:03d}", f"tail{n}", "reported_missing", end + timedelta(minutes=n)))
        for n in range(120)
    ]
    return kept


def expected_alert_ids(events: list[Event]) -> Counter[str]:
    return Counter(a.alert_id for a in reference_alerts(events))


# -- continuous publishing -----------------------------------------------------------------


class Feed(threading.Thread):
    """Publishes ``events`` in chunks, one chunk every ``every_s``, through one publisher.

    A chunk whose publishing fails (the broker restarting) is published again until it goes
    (lines the publisher refuses are dead-lettered by it and counted in ``rejected``):
    an event may then be on its topic twice, which the rules ignore (they hold what they saw).
    """

    def __init__(self, settings: Settings, events: Sequence[Event], *, chunk: int = 40, every_s: float = 0.25,
                 give_up_s: float = 180.0) -> None:
        super().__init__(name="feed", daemon=True)
        self.settings = settings
        self.events = list(events)
        self.chunk = chunk
        self.every_s = every_s
        self.give_up_s = give_up_s
        self.published = 0
        self.retries = 0
        self.rejected = 0
        self.error: BaseException | None = None
        self.started_at = 0.0
        self.took_s = 0.0

    def run(self) -> None:
        self.started_at = time.monotonic()
        try:
            publisher = Publisher(self.settings)
            try:
                for start in range(0, len(self.events), self.chunk):
                    self._publish(publisher, self.events[start:start + self.chunk])
                    self.published = min(len(self.events), start + self.chunk)
                    time.sleep(self.every_s)
            finally:
                publisher.close()
        except BaseException as exc:
            self.error = exc
        self.took_s = time.monotonic() - self.started_at

    def _publish(self, publisher: Publisher, events: list[Event]) -> None:
        lines = "".join(json.dumps({"schema": s, "event": e}) + "\n" for s, e in events)
        deadline = time.monotonic() + self.give_up_s
        while True:
            try:
                before = len(publisher.delivery_failures)
                result = publish_lines(self.settings, "mixed", io.StringIO(lines), progress=False,
                                       publisher=publisher)
                if len(publisher.delivery_failures) == before:
                    self.rejected += result.rejected  # refused lines are dead-lettered, not retried
                    return
                problem = "; ".join(publisher.delivery_failures[before:before + 3])
                del publisher.delivery_failures[before:]
            except Exception as exc:  # the broker away: the whole chunk goes again
                problem = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not publish a chunk for {self.give_up_s}s: {problem}")
            self.retries += 1
            time.sleep(1.0)

    def wait_for(self, count: int, timeout_s: float = 120.0) -> None:
        wait_until(lambda: self.published >= count or not self.is_alive(), timeout_s=timeout_s,
                   what=f"{count} events published", every_s=0.05)
        self.check()

    def finish(self, timeout_s: float = 240.0) -> None:
        self.join(timeout_s)
        if self.is_alive():
            raise TimeoutError(f"publishing did not finish in {timeout_s}s")
        self.check()

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"publishing failed: {self.error}") from self.error


# -- a supervisor ----------------------------------------------------------------------------


@dataclass
class Run:
    pid: int
    started: float
    returncode: int | None = None


@dataclass
class Supervisor:
    """Runs ``argv`` and starts it again (same environment, so the same instance) whenever it
    exits, as systemd or Kubernetes would, until stopped. Each run's exit status is kept."""

    argv: list[str]
    env: dict[str, str]
    log_file: Path
    name: str
    backoff_s: float = 1.0
    max_runs: int = 25
    runs: list[Run] = field(default_factory=list)
    current: subprocess.Popen[bytes] | None = None
    stopping: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def start(self) -> Supervisor:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._loop, name=f"supervise-{self.name}", daemon=True)
        self._thread.start()
        wait_until(lambda: self.current is not None, timeout_s=10, what=f"{self.name} started", every_s=0.02)
        return self

    def _loop(self) -> None:
        while True:
            with self._lock:
                if self.stopping or len(self.runs) >= self.max_runs:
                    return
                with self.log_file.open("ab") as log:
                    log.write(f"=== supervisor: run {len(self.runs) + 1} of {self.name}\n".encode())
                    log.flush()
                    proc = subprocess.Popen(
                        self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT,
                        start_new_session=True,
                    )
                self.current = proc
                run = Run(proc.pid, time.monotonic())
                self.runs.append(run)
            run.returncode = proc.wait()
            with self.log_file.open("ab") as log:
                log.write(f"=== supervisor: {self.name} exited with {run.returncode}\n".encode())
            if not self.stopping:
                time.sleep(self.backoff_s)

    @property
    def exits(self) -> list[int]:
        return [r.returncode for r in self.runs if r.returncode is not None]

    def alive(self) -> bool:
        return self.current is not None and self.current.poll() is None

    def signal(self, sig: signal.Signals) -> int:
        """Send ``sig`` to the running process (its whole session); its pid."""
        wait_until(self.alive, timeout_s=60, what=f"{self.name} running", every_s=0.05)
        assert self.current is not None
        os.killpg(self.current.pid, sig)
        return self.current.pid

    def wait_exited(self, pid: int, timeout_s: float = 60.0) -> int:
        """Wait until the run of process ``pid`` has ended; its exit status."""
        [run] = [r for r in self.runs if r.pid == pid]
        wait_until(lambda: run.returncode is not None, timeout_s=timeout_s,
                   what=f"{self.name} (pid {pid}) to exit", every_s=0.05)
        assert run.returncode is not None
        return run.returncode

    def wait_up(self, min_age_s: float, timeout_s: float = 60.0) -> None:
        """Wait until the current run has been up ``min_age_s`` (past its start-up)."""
        wait_until(
            lambda: self.alive() and time.monotonic() - self.runs[-1].started >= min_age_s,
            timeout_s=timeout_s, what=f"{self.name} up for {min_age_s}s", every_s=0.05,
        )

    def check(self) -> None:
        if len(self.runs) >= self.max_runs and not self.alive():
            raise RuntimeError(f"{self.name} was restarted {self.max_runs} times; see {self.log_file}")

    def stop(self, timeout_s: float = 30.0) -> None:
        with self._lock:
            self.stopping = True
            proc = self.current
        if proc is not None and proc.poll() is None:
            with_suppressed_lookup(lambda: os.killpg(proc.pid, signal.SIGCONT))
            with_suppressed_lookup(lambda: os.killpg(proc.pid, signal.SIGTERM))
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                with_suppressed_lookup(lambda: os.killpg(proc.pid, signal.SIGKILL))
                proc.wait()
        if self._thread is not None:
            self._thread.join(timeout_s)


def with_suppressed_lookup(call: Callable[[], None]) -> None:
    with contextlib.suppress(ProcessLookupError):
        call()


class Harness:
    """One test's processes, all supervised, stopped at the end of the test."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self.supervisors: list[Supervisor] = []
        self.log_dir = Path(ns.env["HUBSTREAM_HOME"]) / "test-logs"

    @property
    def group(self) -> str:
        return f"{self.ns.prefix}hubstream-worker"

    def supervise(self, argv: list[str], name: str, extra_env: dict[str, str] | None = None) -> Supervisor:
        env = {**os.environ, **self.ns.env, **(extra_env or {})}
        sup = Supervisor(argv, env, self.log_dir / f"{self.ns.prefix}{name}.log", name)
        self.supervisors.append(sup)
        return sup.start()

    def worker(self, instance: str, *args: str, module: str = "hubstream.cli",
               extra_env: dict[str, str] | None = None) -> Supervisor:
        """A supervised worker of instance ``instance``: the real CLI (or ``module``, a worker
        with a fault armed) with a 6 s session, so that the group gives a paused worker's
        partitions away within seconds rather than the default 45."""
        return self.supervise(
            [sys.executable, "-m", module, "worker", "--metrics-port", "0", *WORKER_SESSION, *args],
            f"worker-{instance}", {"HUBSTREAM_WORKER_INSTANCE": instance, **(extra_env or {})},
        )

    def sink(self, store: str, instance: str | None = None) -> Supervisor:
        """``hubstream consume STORE``, or with ``instance`` the sink process of
        tests/support/sink_process.py (its own static identity, a 6 s session)."""
        if instance is None:
            return self.supervise([HUBSTREAM, "consume", store, "--metrics-port", "0"], f"sink-{store}")
        return self.supervise(
            [sys.executable, "-m", "tests.support.sink_process", store, "--instance", instance],
            f"sink-{store}-{instance}",
        )

    def check(self) -> None:
        for sup in self.supervisors:
            sup.check()

    def stop(self) -> None:
        for sup in self.supervisors:
            sup.stop()

    def wait_for_worker(self, timeout_s: float = 150.0) -> None:
        wait_for_group(self.ns.settings, self.group, worker_topics(self.group), timeout_s=timeout_s,
                       still_running=self.check)

    def worker_lag(self) -> int | None:
        return lag(self.ns.settings, self.group, worker_topics(self.group))


# -- reading what came out -------------------------------------------------------------------


def committed(settings: Settings, topic: str, timeout_s: float = 30.0) -> list[Any]:
    """Every committed message of ``topic`` (read_committed, from the start to the end)."""
    reader = Consumer({
        **librdkafka_config(settings, "admin"), "group.id": f"faults-reader-{time.monotonic_ns()}",
        "isolation.level": "read_committed", "enable.partition.eof": True,
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
    })
    try:
        metadata = reader.list_topics(topic, timeout=10).topics[topic]
        partitions = sorted(metadata.partitions)
        reader.assign([TopicPartition(topic, p, 0) for p in partitions])
        ended: set[int] = set()
        found: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(ended) < len(partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end in {timeout_s}s")
            for m in reader.consume(1000, 0.5):
                error = m.error()
                if error is None:
                    found.append(m)
                elif error.code() == KafkaError._PARTITION_EOF:
                    ended.add(m.partition())
                else:
                    raise RuntimeError(f"reading {topic}: {error}")
        return found
    finally:
        reader.close()


def committed_records(settings: Settings, topic: str) -> list[dict[str, Any]]:
    serde = serde_for(settings)
    return [serde.decode(m.value())[1] for m in committed(settings, topic)]


def owner_sql(ns: Namespace, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with ns.owner_connection() as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        rows = list(cur.fetchall()) if cur.description else []
    conn.close()
    return rows


def alert_flag_ids(ns: Namespace) -> Counter[str]:
    try:
        return Counter(str(a) for (a,) in owner_sql(ns, "SELECT alert_id FROM hub.alert_flags"))
    except Exception:  # the server restarting
        return Counter()


def writes_logged(ns: Namespace, store: str) -> Counter[str]:
    """How many times the store's sink wrote each record (its access-log write rows)."""
    rows = owner_sql(ns, "SELECT record_ref FROM audit.access_log WHERE action = 'write' AND store = %s",
                     (store,))
    return Counter(str(r) for (r,) in rows)


# -- the outcome -----------------------------------------------------------------------------


@dataclass
class Outcome:
    fault: str
    runs: dict[str, int]
    expected: Counter[str]
    alerts: Counter[str]
    police: Counter[str]
    rows: Counter[str]
    hub_writes: Counter[str]
    took_s: float
    notes: str = ""

    def line(self) -> str:
        runs = ",".join(f"{k}={v}" for k, v in self.runs.items())
        exp = sum(self.expected.values())
        return (
            f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} | {self.fault:<28} | runs {runs:<24} | alerts expected "
            f"{exp} got {sum(self.alerts.values())} (distinct {len(self.alerts)}, "
            f"police {sum(self.police.values())})"
            f" | rows expected {exp} got {sum(self.rows.values())} | {self.took_s:.0f}s"
            + (f" | {self.notes}" if self.notes else "")
        )


def record(outcome: Outcome) -> None:
    """The test's row of the report, printed and appended to .local/faults-report.txt."""
    line = outcome.line()
    print(line, flush=True)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    with REPORT.open("a") as out:
        out.write(line + "\n")


def settle_and_collect(h: Harness, fault: str, expected: Counter[str], started: float,
                       notes: Callable[[], str] = lambda: "", rows_timeout_s: float = 90.0) -> Outcome:
    """Wait until the worker group has no lag and the hub store holds the expected alerts (or
    the time is up), then read every figure the assertions need, and record the test's row."""
    h.wait_for_worker()
    ns = h.ns
    with contextlib.suppress(TimeoutError):  # the assertions say what differs
        wait_until(lambda: alert_flag_ids(ns) == expected, timeout_s=rows_timeout_s,
                   what="the hub store to hold the expected alerts", every_s=0.5)
    time.sleep(2.0)  # a row or an output written twice would show by now
    outcome = Outcome(
        fault=fault,
        runs={s.name: len(s.runs) for s in h.supervisors},
        expected=expected,
        alerts=Counter(str(a["alert_id"]) for a in committed_records(ns.settings, ns.topic(topics.ALERTS))),
        police=Counter(
            str(a["alert_id"]) for a in committed_records(ns.settings, ns.topic(topics.POLICE_ALERTS))
        ),
        rows=alert_flag_ids(ns),
        hub_writes=writes_logged(ns, "hub"),
        took_s=time.monotonic() - started,
    )
    outcome.notes = notes()
    record(outcome)
    return outcome


def assert_exactly_the_reference(outcome: Outcome) -> None:
    expected = outcome.expected
    missing_ = expected - outcome.alerts
    twice = {a: n for a, n in outcome.alerts.items() if n > 1}
    extra = outcome.alerts - expected
    assert not missing_ and not twice and not extra, (
        f"alerts topic: {sum(missing_.values())} missing (e.g. {sorted(missing_)[:3]}), {len(twice)} more "
        f"than once (e.g. {sorted(twice.items())[:3]}), {sum(extra.values())} not in the reference "
        f"(e.g. {sorted(extra)[:3]})"
    )
    assert outcome.police == expected, "the police alert topic differs from the reference"
    assert outcome.rows == expected, (
        f"hub.alert_flags: {sum((expected - outcome.rows).values())} missing, "
        f"{sum((outcome.rows - expected).values())} not in the reference"
    )
    alert_writes = Counter({a: n for a, n in outcome.hub_writes.items() if a in expected})
    assert alert_writes == expected, (
        f"the hub sink wrote some alerts more than once: {sorted((alert_writes - expected).items())[:3]}"
    )
