"""`hubstream publish` with bad lines: clear messages, good lines published, bad ones dead-lettered."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hubstream import topics
from hubstream.topics import MAX_KEY_AND_VALUE_BYTES
from tests.support.events import intelligence, missing
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


def _bad_input(size_line: bytes) -> list[bytes]:
    """Lines no publisher should crash on, between two good reports (lines 1 and 9)."""
    return [
        _report_line("first"),
        size_line,  # line 2: valid, but far over the topic's message limit
        bytes(b for b in range(256) if b != ord("\n")),  # line 3: binary garbage
        b'{"narrative": "caf\xe9 \xff\xfe"}',  # line 4: not UTF-8
        b"",  # line 5: blank, skipped (but still numbered)
        b"[1, 2, 3]",  # line 6: an array, not an object
        b"[" * 100_000 + b"]" * 100_000,  # line 7: nested deeper than any reader goes
        b'"' + b"z" * 50_000_000 + b'"',  # line 8: 50 MB, valid JSON, not an event
        _report_line("last"),
    ]


def _report_line(key: str, narrative: str = "Seen getting into a car with an older male.") -> bytes:
    event = intelligence(key, T0, children=["pk_big"], agency_type="police")
    return json.dumps({**event, "narrative": narrative}).encode()


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_huge_and_malformed_lines_are_refused_and_dead_lettered_without_a_traceback(
    ns: Namespace, tmp_path: Path, source: str
) -> None:
    big = _report_line("big", "x" * 3_000_000)
    lines = _bad_input(big)
    data = b"\n".join(lines) + b"\n"
    args = [HUBSTREAM, "publish", "police-intelligence"]
    if source == "file":
        path = tmp_path / "events.jsonl"
        path.write_bytes(data)
        args += ["--file", str(path)]

    run = subprocess.run(
        args, input=None if source == "file" else data, env={**os.environ, **ns.env},
        capture_output=True, timeout=300,
    )
    stdout, stderr = run.stdout.decode(), run.stderr.decode(errors="replace")

    assert "Traceback" not in stderr, stderr[-3000:]
    assert run.returncode == 1
    assert "published 2, rejected 6" in stdout
    errors = {int(e.split(":")[0].split()[1]): e for e in stderr.splitlines() if e.startswith("line ")}
    assert sorted(errors) == [2, 3, 4, 6, 7, 8]
    assert f"{len(big):,} bytes" in errors[2]
    assert f"{MAX_KEY_AND_VALUE_BYTES:,} bytes" in errors[2]
    assert "too large" in errors[2]
    assert "not valid JSON" in errors[3]
    assert "not valid UTF-8" in errors[4]
    assert "expected an object" in errors[6]
    assert "nested too deeply" in errors[7]
    assert "expected an object" in errors[8]
    assert all(len(e) < 10_000 for e in errors.values())

    published = decoded(ns.settings, ns.topic(topics.POLICE_INTELLIGENCE))
    assert len(published) == 2
    letters = decoded(ns.settings, ns.topic(topics.DEAD_LETTERS))
    dead = {int(r["reason"].split(":")[0].split()[1]): r for _, r in letters}
    assert sorted(dead) == [2, 3, 4, 6, 7, 8]
    letter = dead[2]
    assert letter["stage"] == "publish"
    assert letter["original_size"] == len(big)
    assert letter["original_sha256"] == hashlib.sha256(big).hexdigest()
    assert 0 < len(letter["value"]) < MAX_KEY_AND_VALUE_BYTES
    assert big.startswith(letter["value"])
    huge = dead[8]
    assert huge["stage"] == "validate"
    assert huge["original_size"] == len(lines[7])
    assert huge["original_sha256"] == hashlib.sha256(lines[7]).hexdigest()
    assert lines[7].startswith(huge["value"])
    for number in (3, 4, 6, 7):  # small enough to keep whole
        assert dead[number]["value"] == lines[number - 1]
        assert dead[number]["original_size"] is None and dead[number]["original_sha256"] is None
