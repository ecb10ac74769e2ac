"""A sink that was paused while its partitions moved to another instance cannot write stale state.

The offsets are written compare-and-set on what the sink last read or wrote, and a health flag
row only ever moves forward in its source offset; both are tested against the real broker and
server, with sinks as separate processes stopped and continued by signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from consumers import db
from consumers.health import HealthHandler
from consumers.run import build_sink
from consumers.sink import Decoded
from hubstream import kafka, topics
from hubstream.progress import wait_until
from hubstream.serde import serde_for
from hubstream.settings import PROJECT_ROOT
from schemas import from_json
from schemas.domain import nhs_check_digit
from tests.support.stack import Namespace

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
FENCE_LINE = "another instance moved the offsets"


def nhs_number(n: int) -> str:
    stem = f"94347{n:04d}"
    while (check := nhs_check_digit(stem)) is None:
        n += 1
        stem = f"94347{n:04d}"
    return f"{stem}{check}"


NHS = [nhs_number(100 + 20 * i) for i in range(6)]


def flag_event(i: int, version: int) -> dict[str, Any]:
    """Version ``version`` of flag ``i``: the version is in the author, so each state is known."""
    active = version % 2 == 1
    return from_json("HealthCseFlag", {
        "event_id": f"flag-{i}-v{version}",
        "occurred_at": (T0 + timedelta(days=version)).isoformat().replace("+00:00", "Z"),
        "reported_at": (T0 + timedelta(days=version, seconds=1)).isoformat().replace("+00:00", "Z"),
        "flag_id": f"flag-{i}",
        "nhs_number": NHS[i],
        "status": "active" if active else "inactive",
        "code": "716565009",
        "display": "At increased risk of child sexual exploitation",
        "period_start": T0.date().isoformat(),
        "period_end": None if active else (T0 + timedelta(days=version)).date().isoformat(),
        "author": f"LLR CSE Hub v{version}",
        "owning_authority": "Leicestershire County Council",
        "contact_phone": "+44 116 496 0200",
        "status_reason": None if active else f"reviewed at version {version}",
    })


class Flags:
    """Publishes flag versions as the worker does; remembers where each one landed."""

    def __init__(self, ns: Namespace) -> None:
        self.topic = ns.topic(topics.HEALTH_FLAGS)
        self.serde = serde_for(ns.settings)
        self.producer = kafka.producer(ns.settings, "worker")
        self.latest: dict[str, int] = {}
        self.sent = 0
        self.where: dict[str, tuple[int, int]] = {}

    def publish(self, *versions: tuple[int, int]) -> None:
        futures = []
        for i, version in versions:
            record = flag_event(i, version)
            value = self.serde.encode(self.topic, "HealthCseFlag", record)
            key = record["flag_id"].encode()
            futures.append((record, self.producer.send(self.topic, key=key, value=value)))
            self.latest[record["flag_id"]] = version
        self.producer.flush()
        for record, future in futures:
            meta = future.get(timeout=10)
            self.where[record["event_id"]] = (meta.partition, meta.offset)
        self.sent += len(versions)

    def close(self) -> None:
        self.producer.close()


def owner_sql(ns: Namespace, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with ns.owner_connection() as conn, conn.cursor() as cur:
        cur.execute(sql, params)
        return list(cur.fetchall()) if cur.description else []


def record_every_write(ns: Namespace) -> None:
    """Triggers that keep, for the test, every committed version of a flag and offset move."""
    owner_sql(ns, """
        CREATE TABLE public.flag_writes (id bigserial PRIMARY KEY, flag_id text, author text);
        CREATE TABLE public.offset_moves (
            id bigserial PRIMARY KEY, part integer, before bigint, after bigint);
        CREATE FUNCTION public.keep_flag_write() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
        BEGIN
            INSERT INTO public.flag_writes (flag_id, author) VALUES (NEW.flag_id, NEW.author);
            RETURN NEW;
        END $$;
        CREATE FUNCTION public.keep_offset_move() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
        BEGIN
            INSERT INTO public.offset_moves (part, before, after)
                VALUES (NEW.partition, CASE WHEN TG_OP = 'UPDATE' THEN OLD.next_offset END, NEW.next_offset);
            RETURN NEW;
        END $$;
        CREATE TRIGGER keep_flag_write AFTER INSERT OR UPDATE ON health.cse_flags
            FOR EACH ROW EXECUTE FUNCTION public.keep_flag_write();
        CREATE TRIGGER keep_offset_move AFTER INSERT OR UPDATE ON health.consumer_offsets
            FOR EACH ROW EXECUTE FUNCTION public.keep_offset_move();
    """)


def versions_written(ns: Namespace) -> dict[str, list[int]]:
    written: dict[str, list[int]] = {}
    for flag_id, author in owner_sql(ns, "SELECT flag_id, author FROM public.flag_writes ORDER BY id"):
        written.setdefault(flag_id, []).append(int(author.rsplit("v", 1)[1]))
    return written


def stored_versions(ns: Namespace) -> dict[str, int]:
    rows = owner_sql(ns, "SELECT flag_id, author FROM health.cse_flags")
    return {flag_id: int(author.rsplit("v", 1)[1]) for flag_id, author in rows}


def start_sink(ns: Namespace, instance: str, *extra: str) -> tuple[subprocess.Popen[bytes], Path]:
    log_file = Path(ns.env["HUBSTREAM_HOME"]) / "test-logs" / f"{ns.prefix}sink-{instance}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.sink_process", "health", "--instance", instance, *extra],
        env={**os.environ, **ns.env}, stdout=log_file.open("ab"), stderr=subprocess.STDOUT,
        cwd=PROJECT_ROOT, start_new_session=True,
    )
    ns.processes.append(proc)
    return proc, log_file


def stopped(proc: subprocess.Popen[bytes]) -> bool:
    state = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state == "T"


def test_a_paused_sink_resumed_after_its_replacement_wrote_newer_flags_writes_nothing_stale(
    ns: Namespace,
) -> None:
    record_every_write(ns)
    flags = Flags(ns)
    try:
        flags.publish(*((i, 1) for i in range(6)))
        a, a_log = start_sink(ns, "a", "--pause-before", "flag-0-v2")
        wait_until(lambda: stored_versions(ns) == flags.latest, timeout_s=30, what="sink a writes version 1")

        # Sink a takes version 2 of flag 0 and stops, whole process, about to write it.
        flags.publish((0, 2))
        wait_until(lambda: stopped(a), timeout_s=20, what="sink a paused in its transaction", every_s=0.05)

        # Its replacement takes the partitions once a's session lapses and writes newer states.
        flags.publish((0, 3), *((i, 2) for i in range(1, 6)))
        b, _ = start_sink(ns, "b")
        wait_until(
            lambda: stored_versions(ns) == flags.latest, timeout_s=40, what="sink b writes the newer flags"
        )

        os.kill(a.pid, signal.SIGCONT)
        wait_until(lambda: "resumed" in a_log.read_text(), timeout_s=10, what="sink a resumed")
        deadline = time.monotonic() + 15
        while FENCE_LINE not in a_log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # a stale write, or a replay of one, would show by now

        written = versions_written(ns)
        for flag_id, versions in written.items():
            assert versions == sorted(set(versions)), f"{flag_id} written out of order or twice: {versions}"
        backwards = owner_sql(ns, "SELECT part, before, after FROM public.offset_moves WHERE after < before")
        assert backwards == [], "offsets moved backwards"
        assert stored_versions(ns) == flags.latest
        offsets = owner_sql(ns, "SELECT next_offset FROM health.consumer_offsets")
        assert sum(o for (o,) in offsets) == flags.sent
        assert FENCE_LINE in a_log.read_text()
        assert a.poll() is None and b.poll() is None, "both sinks carry on"
    finally:
        flags.close()


class MovesOffsetsFirst:
    """Runs the sink's real commit, but first lets "another instance" commit past its batch."""

    def __init__(self, sink: Any, move: Any) -> None:
        self.commit = sink._commit
        self.move = move
        self.moved = False

    def __call__(self, batch: Any) -> float:
        if not self.moved:
            self.moved = True
            self.move()
        return float(self.commit(batch))


def test_a_sink_whose_expected_offset_is_stale_cannot_commit(ns: Namespace) -> None:
    flags = Flags(ns)
    group = f"{ns.prefix}hubstream-health-store"
    try:
        flags.publish((0, 1))
        partition, _ = flags.where["flag-0-v1"]
        sink = build_sink(ns.settings, "health", instance_id=f"{group}@stale")

        def another_instance_commits_versions_1_and_2() -> None:
            flags.publish((0, 2))
            _, offset = flags.where["flag-0-v2"]
            with ns.owner_connection() as conn, conn.cursor() as cur:
                HealthHandler().write(cur, [
                    Decoded(flags.topic, partition, o, b"flag-0", "HealthCseFlag", flag_event(0, v))
                    for o, v in ((offset - 1, 1), (offset, 2))
                ])
                cur.execute(
                    "INSERT INTO health.consumer_offsets (group_id, topic, partition, next_offset)"
                    " VALUES (%s, %s, %s, %s)",
                    (group, flags.topic, partition, offset + 1),
                )

        moves = MovesOffsetsFirst(sink, another_instance_commits_versions_1_and_2)
        sink._commit = moves  # type: ignore[method-assign]
        stats = sink.run(idle_polls_before_stop=4)

        assert stats.rows == 0, "the stale batch was rolled back and nothing after it replayed"
        assert stored_versions(ns) == {"flag-0": 2}
        [(next_offset,)] = owner_sql(ns, "SELECT next_offset FROM health.consumer_offsets")
        assert next_offset == flags.where["flag-0-v2"][1] + 1
        writes = owner_sql(ns, "SELECT count(*) FROM audit.access_log WHERE action = 'write'")
        assert writes == [(1,)], "only the other instance's write is logged"
    finally:
        flags.close()


def health_cursor_write(ns: Namespace, offset: int, version: int) -> None:
    conn = db.connect(ns.settings.health_store_dsn)
    try:
        with conn, conn.cursor() as cur:
            HealthHandler().write(
                cur, [Decoded("t", 3, offset, b"flag-0", "HealthCseFlag", flag_event(0, version))]
            )
    finally:
        conn.close()


def test_a_flag_row_moves_only_forward_in_its_source_offset_and_old_rows_still_update(ns: Namespace) -> None:
    # A row written before the flags carried their source offset.
    record = flag_event(0, 1)
    owner_sql(
        ns,
        "INSERT INTO health.cse_flags (flag_id, nhs_number, status, code, display, period_start, author,"
        " owning_authority, contact_phone) VALUES (%s, %s, 'active', %s, %s, %s, %s, %s, %s)",
        (record["flag_id"], record["nhs_number"], record["code"], record["display"], record["period_start"],
         record["author"], record["owning_authority"], record["contact_phone"]),
    )
    health_cursor_write(ns, 10, 3)
    assert stored_versions(ns) == {"flag-0": 3}
    health_cursor_write(ns, 7, 2)  # older: a stale instance, or another group replaying
    assert stored_versions(ns) == {"flag-0": 3}
    health_cursor_write(ns, 12, 4)
    assert stored_versions(ns) == {"flag-0": 4}
    assert owner_sql(ns, "SELECT source_partition, source_offset FROM health.cse_flags") == [(3, 12)]
    refs = owner_sql(ns, "SELECT record_ref FROM audit.access_log WHERE action = 'write' ORDER BY id")
    assert refs == [("flag-0",), ("flag-0",)], "the write refused is not logged as a write"
