"""Missing episodes: repeat missing and return-interview-overdue, per child.

The topic is keyed by child, so each child's state lives with its partition. Located
episodes are also re-keyed onto the hotspot topic.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import faust

from hubstream.protect import pseudonym
from streams import rules, translate
from streams.app import (
    app,
    dead_letter,
    decode,
    missing_topic,
    observe,
    rule_config,
    send_alerts,
    source_of,
    state_table,
)
from streams.hotspot.agents import forward_to_hotspots
from streams.rules import repeat_missing, return_interview

repeat_states = state_table("repeat-missing", "repeat_missing_state")
interview_states = state_table("return-interview", "return_interview_state")
# Children with a return whose interview deadline has not passed, per source partition:
# {child_id: deadline ISO}. Small (returns of the last few days), and restored with the
# partition, so a restarted worker still raises what falls due.
due = state_table("return-interview-due")


def _next_deadline(
    state: return_interview.ReturnInterviewState, settings: rules.ReturnInterviewSettings
) -> datetime | None:
    pending = [
        d for e in state.episodes
        if e.overdue_alert_id is None and (d := e.deadline(settings)) is not None
        and not any(i.occurred_at <= d for i in e.interviews)
    ]
    return min(pending, default=None)


def _track(partition_key: str, child: str, deadline: datetime | None) -> None:
    pending: dict[str, str] = dict(due.get(partition_key) or {})
    if deadline is None:
        if child not in pending:
            return
        del pending[child]
    else:
        if pending.get(child) == deadline.isoformat():
            return
        pending[child] = deadline.isoformat()
    due[partition_key] = pending  # reassigned, never mutated in place: that is what writes the changelog


def _interview_step(
    child: str, area: str, event: rules.RuleEvent | None, watermark: datetime, partition_key: str
) -> list[rules.Alert]:
    settings = rule_config.return_interview.for_area(area)
    state = interview_states.get(pseudonym(child)) or return_interview.initial(child)
    alerts: list[rules.Alert] = []
    if event is not None:
        state, alerts = return_interview.apply(state, event, settings)
    state, more = return_interview.advance(state, watermark, settings)
    interview_states[pseudonym(child)] = state
    _track(partition_key, child, _next_deadline(state, settings))
    return alerts + more


def _falling_due(partition_key: str, watermark: datetime) -> list[str]:
    pending: dict[str, str] = due.get(partition_key) or {}
    mark = watermark.isoformat()
    # ISO strings of UTC datetimes with the same offset sort as the datetimes do.
    return sorted(child for child, deadline in pending.items() if deadline <= mark)


_areas: dict[str, str] = {}  # child -> last area seen, for the settings of time-driven checks


@app.agent(missing_topic)
async def missing_episodes(stream: faust.StreamT[Any]) -> None:
    async for event in stream.events():
        record = decode(event, "MissingEpisodeEvent")
        if record is None:
            continue
        try:
            rule_event = translate.missing_event(record)
            watermark = observe(event, record["occurred_at"])
            partition_key = f"{event.message.topic}:{event.message.partition}"
            alerts: list[rules.Alert] = []
            child = record["person_key"]
            _areas[child] = record["area"]
            if isinstance(rule_event, rules.MissingReported):
                settings = rule_config.repeat_missing.for_area(rule_event.area)
                state = repeat_states.get(pseudonym(child)) or repeat_missing.initial(child)
                state, alerts = repeat_missing.apply(state, rule_event, settings)
                state, _ = repeat_missing.advance(state, watermark, settings)
                repeat_states[pseudonym(child)] = state
            elif isinstance(rule_event, (rules.ChildReturned, rules.ReturnInterview)):
                alerts = _interview_step(child, record["area"], rule_event, watermark, partition_key)
            # Deadlines this event's time has passed, the current child's included (advance is idempotent).
            for due_child in _falling_due(partition_key, watermark):
                alerts += _interview_step(
                    due_child, _areas.get(due_child, record["area"]), None, watermark, partition_key
                )
        except rules.RuleInputError as exc:
            dead_letter(event, str(exc), None, "process")
            continue
        await send_alerts(alerts, event)
        if rule_event is not None:
            await forward_to_hotspots(rule_event, source_of(event), watermark, event.message.timestamp)
