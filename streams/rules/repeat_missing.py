"""Repeat missing: a child reported missing ``count`` times within ``days`` days.

State is per child (``initial(child_id)``). Semantics, all on event time (``occurred_at``):

* An episode is identified by ``episode_id``. A report with an ``event_id`` already seen is
  ignored; a second report of the same episode (new ``event_id``) is remembered but the
  episode still counts once.
* A report ``r`` *qualifies* when the distinct episodes having a report with ``occurred_at``
  in ``[r.occurred_at - days, r.occurred_at]`` (both ends inclusive) number at least
  ``count``. So exactly ``count`` episodes spanning exactly ``days`` days fire; spanning
  ``days`` days and one second do not.
* An episode qualifies when any of its reports does, and then fires exactly one alert:
  anchor = the episode, id from (rule, child, episode id, settings), window = the earliest
  qualifying report's ``[t - days, t]``, ``raised_at`` = that ``t`` (the event time at which the
  condition first held, so it does not depend on arrival order), evidence = event ids of the
  reports inside the window when it fired, severity ``high`` if any of them has risk level
  high, else ``medium``.
* Adding a report never un-qualifies an episode, so after any permutation of the same events
  (with duplicates) the same set of alert ids has fired. A late report can qualify several
  episodes at once, including later ones; each fires.
* ``advance(watermark)`` drops reports older than ``watermark - days - allowed_lateness_days``
  and the fired marks of episodes no longer held. Reports older than ``watermark -
  allowed_lateness_days`` are refused with :class:`LateEventError`: a window that reaches
  them may already have lost evidence. Keep the (possibly empty) state after pruning: its
  watermark is what refuses those late duplicates.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from operator import attrgetter
from typing import Any, Final

from streams.rules._json import decode, encode
from streams.rules._state import evolve
from streams.rules._time import UtcDatetime, advance_watermark, check_not_late
from streams.rules.alerts import Alert, anchor_alert_id, new_alert
from streams.rules.errors import MisroutedEventError
from streams.rules.events import MissingReported, RuleEvent
from streams.rules.settings import RepeatMissingSettings, identity

RULE: Final = "repeat_missing"


@dataclass(frozen=True, slots=True)
class Report:
    event_id: str
    episode_id: str
    occurred_at: UtcDatetime
    area: str
    high_risk: bool


@dataclass(frozen=True, slots=True)
class RepeatMissingState:
    child_id: str
    reports: tuple[Report, ...] = ()  # ordered by (occurred_at, event_id)
    fired: tuple[tuple[str, str], ...] = ()  # (episode_id, alert_id), sorted
    watermark: UtcDatetime | None = None

    def to_json(self) -> dict[str, Any]:
        encoded: dict[str, Any] = encode(self)
        return encoded

    @classmethod
    def from_json(cls, raw: object) -> RepeatMissingState:
        return decode(cls, raw)


def initial(child_id: str) -> RepeatMissingState:
    return RepeatMissingState(child_id=child_id)


def apply(
    state: RepeatMissingState, event: RuleEvent, settings: RepeatMissingSettings
) -> tuple[RepeatMissingState, list[Alert]]:
    """Fold one event in; events other than :class:`MissingReported` leave state unchanged."""
    if not isinstance(event, MissingReported):
        return state, []
    if event.child_id != state.child_id:
        raise MisroutedEventError(
            f"MissingReported.child_id {event.child_id!r} sent to state of {state.child_id!r}"
        )
    if any(r.event_id == event.event_id for r in state.reports):
        return state, []
    check_not_late(
        event.event_id, event.occurred_at, state.watermark, settings.allowed_lateness_days
    )
    report = Report(
        event.event_id, event.episode_id, event.occurred_at, event.area, event.risk_level == "high"
    )
    reports = tuple(sorted((*state.reports, report), key=lambda r: (r.occurred_at, r.event_id)))
    return _fire(evolve(state, reports=reports), report, settings)


def advance(
    state: RepeatMissingState, watermark: datetime, settings: RepeatMissingSettings
) -> tuple[RepeatMissingState, list[Alert]]:
    """Move the watermark on and prune; this rule never fires on time alone."""
    mark = advance_watermark(state.watermark, watermark)
    horizon = mark - timedelta(days=settings.days + settings.allowed_lateness_days)
    if not state.reports or state.reports[0].occurred_at >= horizon:  # reports are in time order
        # Nothing to prune (the usual case, on every event of a child): fired episodes all still
        # have their reports.
        return (state, []) if mark == state.watermark else (evolve(state, watermark=mark), [])
    reports = tuple(r for r in state.reports if r.occurred_at >= horizon)
    held = {r.episode_id for r in reports}
    fired = tuple(f for f in state.fired if f[0] in held)
    return evolve(state, reports=reports, fired=fired, watermark=mark), []


def _fire(
    state: RepeatMissingState, added: Report, settings: RepeatMissingSettings
) -> tuple[RepeatMissingState, list[Alert]]:
    # A report's window is the ``days`` before it, so the report just added can only complete
    # the windows of reports at or after it and at most ``days`` later (itself among them);
    # every other report was checked, with the same window, when it or a later one came.
    fired_ids = {alert for _, alert in state.fired}
    marks: list[tuple[str, str]] = []
    alerts: list[Alert] = []
    pairs = identity(settings)
    reports = state.reports  # in time order
    first = bisect_left(reports, added.occurred_at, key=_at)
    last = bisect_right(reports, added.occurred_at + _days(settings.days), key=_at)
    for report in reports[first:last]:  # time order, so each episode's earliest qualifying report
        this_id = anchor_alert_id(RULE, state.child_id, report.episode_id, pairs)
        if this_id in fired_ids:
            continue
        window = _window(state, report, settings)
        if len({r.episode_id for r in window}) >= settings.count:
            fired_ids.add(this_id)
            marks.append((report.episode_id, this_id))
            alerts.append(_alert(state.child_id, report, window, settings))
    return evolve(state, fired=tuple(sorted({*state.fired, *marks}))), alerts


def _window(
    state: RepeatMissingState, anchor: Report, settings: RepeatMissingSettings
) -> list[Report]:
    reports = state.reports  # in time order
    lo = bisect_left(reports, anchor.occurred_at - _days(settings.days), key=_at)
    return list(reports[lo:bisect_right(reports, anchor.occurred_at, key=_at)])


_at = attrgetter("occurred_at")


@cache
def _days(days: int) -> timedelta:
    return timedelta(days=days)


def _alert(
    child_id: str, anchor: Report, window: list[Report], settings: RepeatMissingSettings
) -> Alert:
    return new_alert(
        rule=RULE,
        subject_kind="child",
        subject=child_id,
        anchor_ids=[anchor.episode_id],
        area=anchor.area,
        severity="high" if any(r.high_risk for r in window) else "medium",
        window_start=anchor.occurred_at - timedelta(days=settings.days),
        window_end=anchor.occurred_at,
        evidence=[r.event_id for r in window],
        raised_at=anchor.occurred_at,
        settings=identity(settings),
    )
