"""One fault each, injected while a simulated county is being published, on the real stack.

Every test then lets the pipeline finish, its supervisors restarting whatever exited, and
checks the same three things against the reference run of the rules over the same history:
the alert ids on the alert topics (read committed) are exactly the reference's, each once; the
hub store's alert flags are exactly those, each written once; and the worker group has no lag
left. Each test appends its figures to .local/faults-report.txt.
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from hubstream import topics
from hubstream.kafka import librdkafka_config
from hubstream.serde import serde_for
from hubstream.settings import PROJECT_ROOT
from producers.publish import key_for, principal_for, protect_fields, topic_for
from schemas.structure import compiled, run
from tests.support.faults import (
    REPORT,
    Feed,
    Harness,
    assert_exactly_the_reference,
    committed_records,
    county,
    expected_alert_ids,
    owner_sql,
    settle_and_collect,
    writes_logged,
)
from tests.support.reference import reference_alerts

COUNTY = county()


@functools.cache
def reference() -> Counter[str]:
    """The reference run's alert ids (computed once, when a test first needs them)."""
    return expected_alert_ids(COUNTY)
SEED = 20260301
FENCE_LINE = "another instance moved the offsets"  # a sink's log line when its batch is refused


def start(h: Harness, events: list[Any] = COUNTY) -> tuple[Feed, float]:
    feed = Feed(h.ns.settings, events)
    feed.start()
    return feed, time.monotonic()


def log_of(h: Harness, name: str) -> str:
    return (h.log_dir / f"{h.ns.prefix}{name}.log").read_text(errors="replace")


def test_reference_history_is_one_the_watermark_cannot_change() -> None:
    assert sum(reference().values()) == len(reference()) > 300, "each alert id once, of several hundred"
    rules = {a.rule for a in reference_alerts(COUNTY)}
    assert rules >= {"repeat_missing", "return_interview_overdue", "association", "hotspot"}


@pytest.mark.timeout(200)
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_worker_stopped_at_random_points(harness: Harness, how: signal.Signals) -> None:
    rng = random.Random(SEED + int(how))
    points = sorted(rng.sample(range(len(COUNTY) // 10, len(COUNTY) * 6 // 10), 3))
    worker = harness.worker("a")
    harness.sink("hub")
    feed, started = start(harness)
    landed = []
    for point in points:
        feed.wait_for(point)
        worker.wait_up(2.0)
        landed.append(feed.published)
        worker.wait_exited(worker.signal(how))
    feed.finish()

    outcome = settle_and_collect(
        harness, f"worker {how.name} x3", reference(), started,
        lambda: f"at events {landed} of {len(COUNTY)}, exits {worker.exits}",
    )
    assert landed[-1] < len(COUNTY), "the faults landed while publishing"
    expected_exit = -signal.SIGKILL if how == signal.SIGKILL else 0
    assert worker.exits[:3] == [expected_exit] * 3
    assert len(worker.runs) == 4
    assert_exactly_the_reference(outcome)


@pytest.mark.timeout(200)
def test_an_exception_in_a_handler_mid_batch(harness: Harness, tmp_path: Path) -> None:
    marker = tmp_path / "failed-once"
    worker = harness.worker(
        "a", module="tests.faults.faulty_worker",
        extra_env={"HUBSTREAM_FAULT_MARKER": str(marker), "HUBSTREAM_FAULT_NTH": "700"},
    )
    harness.sink("hub")
    feed, started = start(harness)
    feed.wait_for(len(COUNTY) // 2)
    failed_while_publishing = marker.exists()
    feed.finish()

    outcome = settle_and_collect(
        harness, "OSError in a handler", reference(), started,
        lambda: f"failed at {marker.read_text().strip() if marker.exists() else '-'}, exits {worker.exits}",
    )
    assert failed_while_publishing, "the handler failed before half the county was published"
    assert worker.exits[:1] == [1], "the failure ends the worker with status 1"
    log = log_of(harness, "worker-a")
    assert "injected fault" in log and "aborting its open transaction" in log
    assert_exactly_the_reference(outcome)


def stopped(pid: int, within_s: float = 5.0) -> bool:
    """Whether ``pid`` is stopped, waiting a little: a signal is delivered, not applied at once."""
    deadline = time.monotonic() + within_s
    while True:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "T" or time.monotonic() > deadline:
            return state == "T"
        time.sleep(0.05)


@pytest.mark.timeout(220)
def test_a_paused_worker_beyond_its_session_is_fenced(harness: Harness) -> None:
    a = harness.worker("a")
    a.wait_up(3.0)
    b = harness.worker("b")
    harness.sink("hub")
    feed, started = start(harness)
    feed.wait_for(len(COUNTY) // 3)
    b.wait_up(6.0)  # b has joined and the partitions are shared
    a_log_before = len(log_of(harness, "worker-a"))
    pid = a.signal(signal.SIGSTOP)
    assert stopped(pid)
    time.sleep(10.0)  # past the 6 s session: a's partitions go to b, a's transaction still open
    os.killpg(pid, signal.SIGCONT)
    feed.finish()

    def fenced() -> str:
        after = log_of(harness, "worker-a")[a_log_before:]
        return "; ".join(
            what for what, seen in (
                ("lost its partitions", "lost " in after),
                ("transaction refused", "failed (" in after),
                (f"exits {a.exits}", bool(a.exits)),
            ) if seen
        )

    outcome = settle_and_collect(harness, "worker paused 10 s (zombie)", reference(), started,
                                 lambda: f"a: {fenced()}; b exits {b.exits}")
    after = log_of(harness, "worker-a")[a_log_before:]
    assert a.exits[:1] == [1] or "lost " in after, "the paused worker was fenced"
    assert_exactly_the_reference(outcome)


def latest_flags(h: Harness) -> dict[str, str]:
    """Each flag's last state on the health-flags topic (read committed): flag id -> status."""
    latest: dict[str, str] = {}
    for record in committed_records(h.ns.settings, h.ns.topic(topics.HEALTH_FLAGS)):
        latest[record["flag_id"]] = str(record["status"]).replace("_", "-")
    return latest


def stored_flags(h: Harness) -> dict[str, str]:
    return {str(f): str(s) for f, s in owner_sql(h.ns, "SELECT flag_id, status FROM health.cse_flags")}


@pytest.mark.timeout(220)
def test_paused_sinks_are_replaced_and_write_nothing_twice(harness: Harness) -> None:
    harness.worker("a")
    hub_a = harness.sink("hub", "a")
    health_a = harness.sink("health", "a")
    hub_a.wait_up(3.0)
    health_a.wait_up(3.0)
    harness.sink("hub", "b")
    harness.sink("health", "b")
    feed, started = start(harness)
    feed.wait_for(len(COUNTY) // 3)
    paused = [hub_a.signal(signal.SIGSTOP), health_a.signal(signal.SIGSTOP)]
    time.sleep(10.0)  # past the sinks' 6 s session: their partitions go to the b sinks
    for pid in paused:
        os.killpg(pid, signal.SIGCONT)
    feed.finish()

    def fenced() -> str:
        return ", ".join(
            f"{name} fenced {log_of(harness, name).count(FENCE_LINE)}x"
            for name in ("sink-hub-a", "sink-health-a")
        )

    outcome = settle_and_collect(harness, "hub+health sink paused 10 s", reference(), started, fenced)
    flags = latest_flags(harness)
    deadline = time.monotonic() + 30
    while stored_flags(harness) != flags and time.monotonic() < deadline:
        time.sleep(0.5)
    health_writes = writes_logged(harness.ns, "health")
    versions = Counter(r["flag_id"] for r in committed_records(harness.ns.settings,
                                                                harness.ns.topic(topics.HEALTH_FLAGS)))
    with REPORT.open("a") as out:
        out.write(f"    health flags: {len(flags)} on the topic ({sum(versions.values())} states), "
                  f"{len(stored_flags(harness))} rows, {sum(health_writes.values())} writes logged\n")
    assert_exactly_the_reference(outcome)
    assert flags, "the county's hub decisions raise health flags"
    assert stored_flags(harness) == flags
    assert all(n <= versions[f] for f, n in health_writes.items()), "a flag state was written twice"


def poison_events(tag: int) -> list[tuple[str, dict[str, Any]]]:
    """Copies of county events (the same children, new ids) dated in 9999, a year from now and
    in 1899: if the worker took one, the watermark, a deadline or a window would move."""
    now = datetime.now(UTC).replace(microsecond=0)
    ahead = (now + timedelta(days=365)).isoformat().replace("+00:00", "Z")
    missing = [e for s, e in COUNTY if s == "MissingEpisodeEvent" and e["kind"] == "reported_missing"]
    intel = [e for s, e in COUNTY if s == "IntelligenceReport"]
    out: list[tuple[str, dict[str, Any]]] = []
    for n, (schema, base, at) in enumerate([
        ("MissingEpisodeEvent", missing[len(missing) // 3], "9999-12-31T00:00:00Z"),
        ("IntelligenceReport", intel[len(intel) // 2], ahead),
        ("MissingEpisodeEvent", missing[len(missing) // 2], ahead),
        ("MissingEpisodeEvent", missing[2 * len(missing) // 3], "1899-12-31T00:00:00Z"),
    ]):
        event = json.loads(json.dumps(base))
        event["event_id"] = f"00000000-0000-4000-8{tag:03d}-{n:012d}"
        if "episode_id" in event:
            event["episode_id"] = f"00000000-0000-4000-9{tag:03d}-{n:012d}"
        event["occurred_at"] = event["reported_at"] = at
        out.append((schema, event))
    return out


def produce_unchecked(h: Harness, events: list[tuple[str, dict[str, Any]]]) -> None:
    """Send events as an agency's own client would, without the publisher's checks: straight
    onto their topics, encoded and keyed as the publisher does."""
    serde = serde_for(h.ns.settings)
    for schema, event in events:
        record = run(compiled(schema).read_json, event)  # the structure only, no domain rules
        topic = topic_for(schema, record).name
        producer = Producer(librdkafka_config(h.ns.settings, principal_for(schema, record)))
        producer.produce(topic, serde.encode(topic, schema, protect_fields(schema, record)),
                         key_for(schema, record))
        assert producer.flush(30) == 0


@pytest.mark.timeout(200)
def test_poison_and_future_dated_events_are_dead_lettered(harness: Harness) -> None:
    refused, unchecked = poison_events(1), poison_events(2)
    events = list(COUNTY)
    for n, bad in enumerate(refused):  # spread through the stream, for the publisher to refuse
        events.insert(len(events) * (n + 1) // (len(refused) + 1), bad)
    harness.worker("a")
    harness.sink("hub")
    feed, started = start(harness, events)
    feed.wait_for(len(events) // 2)
    produce_unchecked(harness, unchecked)  # mid-stream, for the worker to refuse
    feed.finish()
    outcome = settle_and_collect(harness, "poison + future-dated", reference(), started,
                                 lambda: f"refused by the publisher {feed.rejected}")

    serde = serde_for(harness.ns.settings)
    dead: dict[str, dict[str, Any]] = {}
    for letter in committed_records(harness.ns.settings, harness.ns.topic(topics.DEAD_LETTERS)):
        if letter["stage"] == "validate":  # refused by the publisher: the line as given
            original = json.loads(letter["value"])["event"]
        else:
            _, original = serde.decode(letter["value"])
        dead[original["event_id"]] = letter
    with REPORT.open("a") as out:
        for _, e in refused + unchecked:
            d = dead.get(e["event_id"], {})
            out.write(f"    {e['event_id']} dated {e['occurred_at']}: dead letter of stage {d.get('stage')},"
                      f" field {d.get('field')}\n")
    for stage, poisoned in (("validate", refused), ("decode", unchecked)):
        for _, e in poisoned:
            assert e["event_id"] in dead, f"the event dated {e['occurred_at']} is not dead-lettered"
            letter = dead[e["event_id"]]
            assert letter["stage"] == stage
            assert letter["field"] == "occurred_at" and "occurred_at" in letter["reason"], letter["reason"]
    assert feed.rejected == len(refused)
    assert_exactly_the_reference(outcome)


def stack_command(*args: str) -> None:
    subprocess.run([sys.executable, "deploy/local/stack.py", *args], cwd=PROJECT_ROOT, check=True,
                   capture_output=True, timeout=180)


@pytest.mark.timeout(280)
def test_broker_restarted_mid_stream(harness: Harness) -> None:
    worker = harness.worker("a")
    worker.backoff_s = 2.0
    worker.max_runs = 60
    harness.sink("hub")
    feed, started = start(harness)
    feed.wait_for(len(COUNTY) * 2 // 5)
    worker.wait_up(2.0)
    stack_command("down", "kafka")
    try:
        time.sleep(3.0)
    finally:
        stack_command("up", "kafka")
    feed.finish()
    outcome = settle_and_collect(harness, "broker restarted", reference(), started,
                                 lambda: f"worker exits {worker.exits}, publish retries {feed.retries}")
    assert_exactly_the_reference(outcome)


@pytest.mark.timeout(280)
def test_database_restarted_mid_stream(harness: Harness) -> None:
    harness.worker("a")
    sink = harness.sink("hub")
    sink.backoff_s = 2.0
    sink.max_runs = 60
    feed, started = start(harness)
    feed.wait_for(len(COUNTY) * 2 // 5)
    sink.wait_up(2.0)
    stack_command("down", "postgres")
    try:
        time.sleep(3.0)
    finally:
        stack_command("up", "postgres")
    feed.finish()
    outcome = settle_and_collect(harness, "PostgreSQL restarted", reference(), started,
                                 lambda: f"sink exits {sink.exits}")
    assert_exactly_the_reference(outcome)
