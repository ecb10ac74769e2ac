"""Builders for rule events in tests: short, with sensible defaults, all times in UTC."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.rules import (
    ChildReturned,
    Entity,
    IntelligenceReport,
    Location,
    MissingReported,
    ReturnInterview,
)
from streams.rules.alerts import Alert

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(text: str) -> datetime:
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def missing(
    episode: str,
    when: datetime,
    *,
    child: str = "child-1",
    event_id: str | None = None,
    risk: str = "medium",
    area: str = "north",
    agency: str = "police",
    location: Location | None = None,
) -> MissingReported:
    return MissingReported(
        event_id=event_id or f"missing-{episode}",
        child_id=child,
        episode_id=episode,
        occurred_at=when,
        area=area,
        agency=agency,
        location=location,
        risk_level=risk,  # type: ignore[arg-type]
    )


def returned(
    episode: str,
    when: datetime,
    *,
    child: str = "child-1",
    event_id: str | None = None,
    area: str = "north",
    agency: str = "police",
    location: Location | None = None,
) -> ChildReturned:
    return ChildReturned(
        event_id=event_id or f"returned-{episode}",
        child_id=child,
        episode_id=episode,
        occurred_at=when,
        area=area,
        agency=agency,
        location=location,
    )


def interview(
    episode: str,
    when: datetime,
    *,
    child: str = "child-1",
    event_id: str | None = None,
    outcome: str = "completed",
) -> ReturnInterview:
    return ReturnInterview(
        event_id=event_id or f"interview-{episode}",
        child_id=child,
        episode_id=episode,
        occurred_at=when,
        outcome=outcome,  # type: ignore[arg-type]
    )


def report(
    event_id: str,
    when: datetime,
    *,
    children: Iterable[str] = (),
    entities: Iterable[Entity] = (),
    locations: Iterable[Location] = (),
    agency: str = "police",
    area: str = "north",
    handling_code: str | None = None,
    handling_conditions: str | None = None,
    report_id: str = "",
    reported_at: datetime | None = None,
) -> IntelligenceReport:
    return IntelligenceReport(
        event_id=event_id,
        occurred_at=when,
        area=area,
        agency=agency,
        children=tuple(children),
        locations=tuple(locations),
        entities=tuple(entities),
        handling_code=handling_code,  # type: ignore[arg-type]
        handling_conditions=handling_conditions,
        report_id=report_id,
        reported_at=reported_at,
    )


def reissue(
    original: IntelligenceReport,
    event_id: str,
    *,
    after: timedelta = timedelta(days=2),
    handling_code: str | None = "P",
    handling_conditions: str | None = None,
) -> IntelligenceReport:
    """The original report re-issued graded (same report id, new event id, reported later)."""
    issued = (original.reported_at or original.occurred_at) + after
    return report(
        event_id, original.occurred_at, children=original.children, entities=original.entities,
        locations=original.locations, agency=original.agency, area=original.area,
        handling_code=handling_code, handling_conditions=handling_conditions,
        report_id=original.report_id, reported_at=issued,
    )


def fold(
    apply: Callable[[Any, Any, Any], tuple[Any, list[Alert]]],
    state: Any,
    events: Iterable[Any],
    settings: Any,
) -> tuple[Any, list[Alert]]:
    """Apply events in order, collecting every alert raised."""
    alerts: list[Alert] = []
    for event in events:
        state, raised = apply(state, event, settings)
        alerts.extend(raised)
    return state, alerts


def ids(alerts: Iterable[Alert]) -> set[str]:
    return {a.alert_id for a in alerts}
