"""Return interview overdue: no return interview within ``hours`` of a child returning.

State is per child (``initial(child_id)``), one record per missing episode. Semantics:

* Each episode keeps the area it was reported missing in (its earliest
  :class:`MissingReported`; while none is held, its earliest return's), and its deadline and
  alerts use that area's settings: pass the rule's :class:`AreaSettings` (a plain
  :class:`ReturnInterviewSettings` applies to every episode). So a child placed out of area
  gets, for each episode, the deadline of the authority it went missing from, whichever event
  of the child is handled last. A missing report arriving after its episode's overdue alert
  was raised (more than ``hours + out_of_order_hours`` late) changes nothing of that episode.

* ``returned_at`` is the earliest :class:`ChildReturned` ``occurred_at`` for the episode;
  ``deadline = returned_at + hours``, in exact elapsed hours (UTC), so a deadline spanning a
  UK clock change is still 72 real hours.
* The overdue alert fires once, when the watermark is ``>= deadline + out_of_order_hours``
  and no :class:`ReturnInterview` (completed or declined) for the episode has ``occurred_at <=
  deadline``. The worker's watermark is the latest event time on a partition many children
  share, so the timer is held back: events arriving less than ``out_of_order_hours`` behind it
  raise no overdue alert that their event-time order would not. It fires from ``advance`` or,
  when the return itself arrives after the watermark has passed that point, from ``apply``.
  Anchor = the episode; window = ``[returned_at, deadline]``; ``raised_at`` = the deadline;
  evidence = the return events.
* Any interview known for an episode whose overdue alert has fired, whether it arrived
  after the alert or was already held (it occurred after the deadline), raises one
  ``return_interview_resolved`` follow-up with ``resolves`` = the overdue alert id,
  ``raised_at`` = the interview's ``occurred_at`` (earlier than the deadline when the
  interview was on time but reported late), evidence = returns plus that interview.
* Interviews may arrive before their return; they are held and count when it arrives.
* Pruning on ``advance``: a closed episode (interviewed, or resolved) is dropped once its
  deadline is older than ``watermark - allowed_lateness_days``; interviews and missing reports
  with no return are dropped once older than that (a return after a longer absence takes its
  own area). An overdue episode with no interview is kept until one arrives. Returns, and
  interviews for episodes not held, older than ``watermark - allowed_lateness_days`` are
  refused with :class:`LateEventError`; missing reports that old are ignored (repeat missing
  refuses them). Lateness and pruning are each episode's own area's.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Final

from streams.rules._json import decode, encode
from streams.rules._state import evolve
from streams.rules._time import UtcDatetime, advance_watermark, check_not_late
from streams.rules.alerts import Alert, new_alert
from streams.rules.errors import MisroutedEventError
from streams.rules.events import ChildReturned, MissingReported, ReturnInterview, RuleEvent
from streams.rules.settings import AreaSettings, ReturnInterviewSettings, identity

OVERDUE: Final = "return_interview_overdue"
RESOLVED: Final = "return_interview_resolved"

# The rule's settings: per area (each episode under its own area's), or one for every episode.
Settings = ReturnInterviewSettings | AreaSettings[ReturnInterviewSettings]


@dataclass(frozen=True, slots=True)
class Stamp:
    """A return or interview as the rule remembers it (area is the reporting area, if any)."""

    event_id: str
    occurred_at: UtcDatetime
    area: str = ""


@dataclass(frozen=True, slots=True)
class EpisodeRecord:
    episode_id: str
    returns: tuple[Stamp, ...] = ()  # ordered by (occurred_at, event_id)
    interviews: tuple[Stamp, ...] = ()  # ordered by (occurred_at, event_id)
    overdue_alert_id: str | None = None
    resolved: bool = False
    reported: Stamp | None = None  # the earliest missing report of the episode, with its area

    @property
    def area(self) -> str:
        """The area whose settings the episode is under: where it was reported missing."""
        if self.reported is not None:
            return self.reported.area
        return self.returns[0].area if self.returns else ""

    def deadline(self, settings: Settings) -> datetime | None:
        if not self.returns:
            return None
        return self.returns[0].occurred_at + _hours(_own(settings, self).hours)

    def holds(self, event_id: str) -> bool:
        if self.reported is not None and self.reported.event_id == event_id:
            return True
        return any(s.event_id == event_id for s in (*self.returns, *self.interviews))


def _own(settings: Settings, record: EpisodeRecord) -> ReturnInterviewSettings:
    """The settings of the episode's own area."""
    return settings.for_area(record.area) if isinstance(settings, AreaSettings) else settings


@dataclass(frozen=True, slots=True)
class ReturnInterviewState:
    child_id: str
    episodes: tuple[EpisodeRecord, ...] = ()  # ordered by episode_id
    watermark: UtcDatetime | None = None

    def to_json(self) -> dict[str, Any]:
        encoded: dict[str, Any] = encode(self)
        return encoded

    @classmethod
    def from_json(cls, raw: object) -> ReturnInterviewState:
        return decode(cls, raw)

    def episode(self, episode_id: str) -> EpisodeRecord | None:
        return next((e for e in self.episodes if e.episode_id == episode_id), None)


def initial(child_id: str) -> ReturnInterviewState:
    return ReturnInterviewState(child_id=child_id)


def apply(
    state: ReturnInterviewState, event: RuleEvent, settings: Settings
) -> tuple[ReturnInterviewState, list[Alert]]:
    """Fold in a missing report (for its area), a return or an interview; other events leave
    state unchanged."""
    if not isinstance(event, (MissingReported, ChildReturned, ReturnInterview)):
        return state, []
    if event.child_id != state.child_id:
        raise MisroutedEventError(
            f"{type(event).__name__}.child_id {event.child_id!r} sent to state of {state.child_id!r}"
        )
    held = state.episode(event.episode_id)
    record = held or EpisodeRecord(event.episode_id)
    if record.holds(event.event_id):
        return state, []
    if isinstance(event, MissingReported) and not _takes_area(record, event):
        return state, []
    updated = _record(record, event)
    lateness = _own(settings, updated).allowed_lateness_days
    if isinstance(event, MissingReported):
        if held is None and _older_than(event.occurred_at, state.watermark, lateness):
            return state, []  # too late to matter; repeat missing refuses it
    elif isinstance(event, ChildReturned) or held is None:
        check_not_late(event.event_id, event.occurred_at, state.watermark, lateness)
    record, alerts = _check(state.child_id, updated, state.watermark, settings)
    return _put(state, record), alerts


def _takes_area(record: EpisodeRecord, event: MissingReported) -> bool:
    """Whether a missing report sets its episode's area: it is the earliest held, and the
    episode's alert has not been raised under another area's settings."""
    held = record.reported
    if record.overdue_alert_id is not None:
        return False
    return held is None or (event.occurred_at, event.event_id) < (held.occurred_at, held.event_id)


def _older_than(at: datetime, watermark: datetime | None, days: int) -> bool:
    return watermark is not None and at < watermark - _days(days)


def advance(
    state: ReturnInterviewState, watermark: datetime, settings: Settings
) -> tuple[ReturnInterviewState, list[Alert]]:
    """Raise what the new watermark makes overdue, then prune closed episodes."""
    mark = advance_watermark(state.watermark, watermark)
    kept: list[EpisodeRecord] = []
    alerts: list[Alert] = []
    for held in state.episodes:
        record, raised = _check(state.child_id, held, mark, settings)
        alerts.extend(raised)
        horizon = mark - _days(_own(settings, record).allowed_lateness_days)
        if not _prunable(record, horizon, settings):
            kept.append(record)
    if len(kept) == len(state.episodes) and all(map(operator.is_, kept, state.episodes)):
        # The usual case, run for every event of the partition: nothing due, nothing to prune.
        return (state if mark == state.watermark else evolve(state, watermark=mark)), alerts
    return evolve(state, episodes=tuple(kept), watermark=mark), alerts


def next_due(state: ReturnInterviewState, settings: Settings) -> datetime | None:
    """The watermark at which :func:`advance` raises this child's next overdue alert, or None
    if no alert can fall due without more events (the worker keeps a timer queue on it)."""
    return min((at for e in state.episodes if (at := _overdue_at(e, settings)) is not None), default=None)


def _overdue_at(record: EpisodeRecord, settings: Settings) -> datetime | None:
    """The watermark at which this episode's overdue alert is raised; None if it has been, or
    never will be (no return yet, or an interview by the deadline)."""
    if record.overdue_alert_id is not None:
        return None
    deadline = record.deadline(settings)
    if deadline is None:
        return None
    if record.interviews and record.interviews[0].occurred_at <= deadline:  # the earliest first
        return None
    return deadline + _hours(_own(settings, record).out_of_order_hours)


@cache
def _days(days: int) -> timedelta:
    return timedelta(days=days)


@cache
def _hours(hours: int) -> timedelta:
    return timedelta(hours=hours)


def _record(record: EpisodeRecord, event: MissingReported | ChildReturned | ReturnInterview) -> EpisodeRecord:
    if isinstance(event, MissingReported):
        return evolve(record, reported=Stamp(event.event_id, event.occurred_at, event.area))
    if isinstance(event, ChildReturned):
        returns = _sorted((*record.returns, Stamp(event.event_id, event.occurred_at, event.area)))
        return evolve(record, returns=returns)
    interviews = _sorted((*record.interviews, Stamp(event.event_id, event.occurred_at)))
    return evolve(record, interviews=interviews)


def _sorted(stamps: tuple[Stamp, ...]) -> tuple[Stamp, ...]:
    return tuple(sorted(stamps, key=lambda s: (s.occurred_at, s.event_id)))


def _put(state: ReturnInterviewState, record: EpisodeRecord) -> ReturnInterviewState:
    others = [e for e in state.episodes if e.episode_id != record.episode_id]
    return evolve(state, episodes=tuple(sorted((*others, record), key=lambda e: e.episode_id)))


def _check(
    child_id: str,
    record: EpisodeRecord,
    watermark: datetime | None,
    settings: Settings,
) -> tuple[EpisodeRecord, list[Alert]]:
    if record.resolved or (record.overdue_alert_id is not None and not record.interviews):
        return record, []  # raised and resolved, or raised and waiting for an interview
    alerts: list[Alert] = []
    deadline = record.deadline(settings)
    due = _overdue_at(record, settings)
    if due is not None and watermark is not None and watermark >= due:
        assert deadline is not None  # a due time implies a return
        overdue = _overdue_alert(child_id, record, deadline, settings)
        record = evolve(record, overdue_alert_id=overdue.alert_id)
        alerts.append(overdue)
    if record.overdue_alert_id is not None and not record.resolved and record.interviews:
        assert deadline is not None  # an overdue alert implies a return
        alerts.append(_resolved_alert(child_id, record, deadline, settings))
        record = evolve(record, resolved=True)
    return record, alerts


def _prunable(record: EpisodeRecord, horizon: datetime, settings: Settings) -> bool:
    deadline = record.deadline(settings)
    if deadline is None:
        reported = record.reported
        return (reported is None or reported.occurred_at < horizon) and all(
            i.occurred_at < horizon for i in record.interviews
        )
    closed = record.resolved or (record.overdue_alert_id is None and bool(record.interviews))
    return closed and deadline < horizon


def _overdue_alert(
    child_id: str, record: EpisodeRecord, deadline: datetime, settings: Settings
) -> Alert:
    return new_alert(
        rule=OVERDUE,
        subject_kind="child",
        subject=child_id,
        anchor_ids=[record.episode_id],
        area=record.area,
        severity="medium",
        window_start=record.returns[0].occurred_at,
        window_end=deadline,
        evidence=[s.event_id for s in record.returns],
        raised_at=deadline,
        settings=identity(_own(settings, record)),
    )


def _resolved_alert(
    child_id: str, record: EpisodeRecord, deadline: datetime, settings: Settings
) -> Alert:
    interview = record.interviews[0]  # the earliest, so a batch replay picks the same one
    return new_alert(
        rule=RESOLVED,
        subject_kind="child",
        subject=child_id,
        anchor_ids=[record.episode_id],
        area=record.area,
        severity="low",
        window_start=record.returns[0].occurred_at,
        window_end=deadline,
        evidence=[*(s.event_id for s in record.returns), interview.event_id],
        raised_at=interview.occurred_at,
        settings=identity(_own(settings, record)),
        resolves=record.overdue_alert_id,
    )
