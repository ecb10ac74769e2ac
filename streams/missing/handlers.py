"""Missing episodes: repeat missing and return-interview-overdue, per child.

The topic is keyed by child, so each child's state lives with its partition. Located
episodes are also re-keyed onto the hotspot topic.
"""

from __future__ import annotations

import heapq
from datetime import datetime

from hubstream.protect import pseudonym
from streams import rules, translate
from streams.app import (
    MISSING,
    dead_letter,
    decode,
    enabled,
    forgets_revoked,
    json_table,
    observe,
    rule_config,
    send_alerts,
    state_table,
)
from streams.engine import Batch, Record
from streams.hotspot.handlers import forward_to_hotspots
from streams.rules import repeat_missing, return_interview

repeat_states = state_table("repeat-missing", MISSING, repeat_missing.RepeatMissingState, "repeat_missing")
interview_states = state_table(
    "return-interview", MISSING, return_interview.ReturnInterviewState, "return_interview"
)
# Children whose overdue alert may still fall due, keyed by the child's pseudonym:
# {"child", "deadline", "area"}, "deadline" being when the watermark must reach to raise it (ISO,
# UTC; the interview deadline plus out_of_order_hours, under the name earlier changelogs used).
# Small (returns of the last few days), and restored with the partition, so a restarted worker
# still raises what falls due.
due = json_table("return-interview-due", MISSING, "return_interview")
# Per partition, the same entries ordered by when they fall due (built from the table when first
# needed, so also after a restore: the table's dict is held here and compared by identity).
# Entries the table no longer holds are skipped when they surface.
_queues: dict[int, tuple[dict[str, dict[str, str]], list[tuple[str, str]]]] = {}


@forgets_revoked
def _forget_queues(gone: list[tuple[str, int]]) -> None:
    for topic, partition in gone:
        if topic == MISSING:
            _queues.pop(partition, None)


def _queue(partition: int) -> list[tuple[str, str]]:
    entries = due.partitions[partition]
    held = _queues.get(partition)
    if held is None or held[0] is not entries:
        queue = [(entry["deadline"], key) for key, entry in entries.items()]
        heapq.heapify(queue)
        _queues[partition] = held = (entries, queue)
    return held[1]


def _track(partition: int, key: str, child: str, area: str, due_at: datetime | None) -> None:
    held = due.get(partition, key)
    if due_at is None:
        if held is not None:
            due.set(partition, key, None)
        return
    mark = due_at.isoformat()
    if held is not None and held["deadline"] == mark:
        return
    due.set(partition, key, {"child": child, "deadline": mark, "area": area})
    heapq.heappush(_queue(partition), (mark, key))


def _interview_step(
    partition: int, child: str, area: str, event: rules.RuleEvent | None, watermark: datetime
) -> list[rules.Alert]:
    # Every area's settings: each episode's deadline is its own area's (where it was reported
    # missing), not that of the event handled now. ``area`` is only kept in the due entry.
    settings = rule_config.return_interview
    key = pseudonym(child)
    state = interview_states.get(partition, key) or return_interview.initial(child)
    alerts: list[rules.Alert] = []
    if event is not None:
        state, alerts = return_interview.apply(state, event, settings)
    state, more = return_interview.advance(state, watermark, settings)
    interview_states.set(partition, key, state)
    _track(partition, key, child, area, return_interview.next_due(state, settings))
    return alerts + more


def _falling_due(partition: int, watermark: datetime) -> list[tuple[str, str]]:
    """(child, area) of every tracked entry whose due time the watermark has reached."""
    queue = _queue(partition)
    mark = watermark.isoformat()  # ISO strings of UTC datetimes sort as the datetimes do
    found: dict[str, tuple[str, str]] = {}
    while queue and queue[0][0] <= mark:
        due_at, key = heapq.heappop(queue)
        entry = due.get(partition, key)
        if entry is not None and entry["deadline"] == due_at:
            found[key] = (entry["child"], entry["area"])
    return sorted(found.values())


# The rules that read each step of an episode: a worker running some rules only (a replay) does
# not translate a step none of them reads. A step not named here is always translated.
_READERS_OF_STEP = {
    "reported_missing": {"repeat_missing", "return_interview", "hotspot"},  # its area: the episode's
    "found_or_returned": {"return_interview", "hotspot"},
    "return_interview": {"return_interview"},
}


def _read_by_enabled(kind: str) -> bool:
    readers = _READERS_OF_STEP.get(kind)
    return readers is None or not readers.isdisjoint(enabled)


def missing_episodes(record: Record, batch: Batch) -> None:
    value = decode(record, batch, "MissingEpisodeEvent")
    if value is None:
        return
    partition = record.partition
    try:
        rule_event = translate.missing_event(value) if _read_by_enabled(value["kind"]) else None
        watermark = observe(record, value["occurred_at"])
        alerts: list[rules.Alert] = []
        child = value["person_key"]
        if isinstance(rule_event, rules.MissingReported) and "repeat_missing" in enabled:
            settings = rule_config.repeat_missing.for_area(rule_event.area)
            key = pseudonym(child)
            state = repeat_states.get(partition, key) or repeat_missing.initial(child)
            state, alerts = repeat_missing.apply(state, rule_event, settings)
            state, _ = repeat_missing.advance(state, watermark, settings)
            repeat_states.set(partition, key, state)
        if "return_interview" in enabled:
            if isinstance(rule_event, (rules.MissingReported, rules.ChildReturned, rules.ReturnInterview)):
                alerts += _interview_step(partition, child, value["area"], rule_event, watermark)
            # Entries this event's time has made due, the current child's included (advance is
            # idempotent).
            for due_child, area in _falling_due(partition, watermark):
                alerts += _interview_step(partition, due_child, area, None, watermark)
    except rules.RuleInputError as exc:
        dead_letter(record, batch, str(exc), None, "process")
        return
    send_alerts(alerts, batch, record)
    if rule_event is not None:
        forward_to_hotspots(rule_event, record, watermark, batch)
