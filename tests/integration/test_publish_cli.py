"""`hubstream publish` with bad lines: clear messages, good lines published, bad ones dead-lettered."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hubstream import topics
from tests.support.events import missing
from tests.support.stack import HUBSTREAM, Namespace, decoded

T0 = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)


def test_bad_lines_are_named_dead_lettered_and_fail_the_exit_status(ns: Namespace, tmp_path: Path) -> None:
    good = [missing("pk_p", f"e{n}", "reported_missing", T0 + timedelta(days=n)) for n in range(3)]
    no_risk = missing("pk_p", "e9", "reported_missing", T0)
    no_risk["risk_level"] = None
    bad_time = missing("pk_p", "e8", "reported_missing", T0)
    bad_time["occurred_at"] = "2026-04-01T12:00:00"  # no offset: not UTC
    lines = [
        json.dumps(good[0]),
        json.dumps(no_risk),
        json.dumps(good[1]),
        "{not json",
        json.dumps(bad_time),
        json.dumps(good[2]),
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(lines) + "\n")

    run = subprocess.run(
        [HUBSTREAM, "publish", "missing-episode", "--file", str(path)],
        env={**os.environ, **ns.env},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert run.returncode == 1
    assert "published 3, rejected 3" in run.stdout
    errors = [line for line in run.stderr.splitlines() if line.startswith("line ")]
    assert len(errors) == 3
    assert errors[0].startswith("line 2: risk_level:") and "None" in errors[0]
    assert errors[1].startswith("line 4:") and "not valid JSON" in errors[1]
    assert errors[2].startswith("line 5: occurred_at:") and "2026-04-01T12:00:00" in errors[2]

    published = decoded(ns.settings, ns.topic(topics.MISSING_EPISODES))
    assert sorted(r["event_id"] for _, r in published) == sorted(e["event_id"] for e in good)
    dead = [r for _, r in decoded(ns.settings, ns.topic(topics.DEAD_LETTERS))]
    assert len(dead) == 3
    assert {d["stage"] for d in dead} == {"validate"}
    assert sorted(d["field"] or "" for d in dead) == ["", "occurred_at", "risk_level"]
    assert all(d["reason"].startswith("line ") for d in dead)
    assert (
        json.loads(next(d["value"] for d in dead if d["field"] == "risk_level"))["event_id"]
        == no_risk["event_id"]
    )


def test_publish_reads_standard_input(ns: Namespace) -> None:
    event = missing("pk_q", "e1", "reported_missing", T0)
    run = subprocess.run(
        [HUBSTREAM, "publish", "missing-episode"],
        input=json.dumps(event) + "\n",
        env={**os.environ, **ns.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert [r["event_id"] for _, r in decoded(ns.settings, ns.topic(topics.MISSING_EPISODES))] == [
        event["event_id"]
    ]
