"""A reference run of the pure rules over a list of events, without Kafka or faust.

The worker must give exactly these alerts for histories where the watermark does not matter
(every return interview either on time or never), which is what the end-to-end tests use.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import schemas
from streams import rules, translate
from streams.config import load_rule_config
from streams.rules import association, hotspot, repeat_missing, return_interview


def reference_alerts(events: list[tuple[str, dict[str, Any]]]) -> list[rules.Alert]:
    config = load_rule_config("")
    states: dict[tuple[str, str], Any] = {}
    alerts: list[rules.Alert] = []
    latest: datetime | None = None

    def fold(module: Any, key: str, event: rules.RuleEvent, settings: Any) -> None:
        state = states.get((module.__name__, key)) or module.initial(key)
        state, fired = module.apply(state, event, settings)
        states[(module.__name__, key)] = state
        alerts.extend(fired)

    for schema, obj in events:
        record = schemas.from_json(schema, obj)
        if schema == "MissingEpisodeEvent":
            event = translate.missing_event(record)
        elif schema == "IntelligenceReport":
            event = translate.intelligence_event(record)
        else:
            continue
        if event is None:
            continue
        latest = max(latest, event.occurred_at) if latest else event.occurred_at
        area = record["area"]
        if isinstance(event, rules.MissingReported):
            fold(repeat_missing, event.child_id, event, config.repeat_missing.for_area(area))
        if isinstance(event, (rules.MissingReported, rules.ChildReturned, rules.ReturnInterview)):
            # Every area's settings: each episode is under its own area's (where it went missing).
            fold(return_interview, event.child_id, event, config.return_interview)
        for key in hotspot.keys_for_event(event, config.hotspot.for_area(area)):
            fold(hotspot, key, event, config.hotspot.for_area(area))
        if isinstance(event, rules.IntelligenceReport) and event.children:
            for key in association.keys_for(event):
                fold(association, key, event, config.association.for_area(area))
    assert latest is not None
    for (name, _key), state in list(states.items()):
        if name == return_interview.__name__:
            _, fired = return_interview.advance(state, latest, config.return_interview)
            alerts.extend(fired)
    return alerts
