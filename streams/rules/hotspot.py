"""Hotspot: reports and missing-episode locations clustering in space and time.

Space is H3. An observation is one location of an :class:`IntelligenceReport`, or the
location of a :class:`MissingReported` / :class:`ChildReturned` (its child is the one child
named). Its fine cell is the H3 cell at ``resolution``; the neighbourhood of a fine cell is
``grid_disk(cell, neighbour_rings)``.

State is per coarse cell: ``initial(cell)`` with ``cell`` an H3 cell at
``report_resolution``. The adapter sends an event to every key in :func:`keys_for_event`:
the parents of every fine cell within ``neighbour_rings`` of one of its locations, which is
exactly the set of coarse cells whose centre cells can see it.

Semantics:

* An observation ``o`` (grouped by event id: the *anchor*) qualifies for coarse cell ``K``
  when, for some centre cell ``c`` within ``neighbour_rings`` of ``o``'s fine cell and with
  ``cell_to_parent(c, report_resolution) == K``, the observations in ``c``'s neighbourhood
  with ``occurred_at`` in ``[o.t - days, o.t]`` (both inclusive) come from at least
  ``min_reports`` distinct reports, ``min_agencies`` distinct agencies and name at least
  ``min_children`` distinct children.
* A report is counted once however many times it is issued: a re-issue (same ``report_id``,
  new event id: a police grading of a partner report) is held as its own observations, which
  count for the same report (a missing episode's event is a report of its own). The alert's
  evidence names each report by its *first* issue's event id (the earliest by ``(reported_at,
  event_id)`` of those held), so re-issues change no alert id and, when the original came
  first, no evidence; its handling conditions are each report's *latest* issue's, the one
  that carries the report's current grading.
* Time is cut into *periods*: consecutive spans of ``days`` days aligned to Monday
  1970-01-05T00:00Z (with ``days=7``, ISO weeks). ``K`` fires at most once per period, when
  any anchor whose ``occurred_at`` falls in the period qualifies: the analysts want "this
  place is a hotspot now", not one alert per report.
* Alert id from (rule, ``K``, period start, settings). Adding observations never
  un-qualifies an anchor, so any permutation of the same events (with duplicates, matched
  on event id) fires the same alert ids. The *evidence* of a period's alert can depend on
  arrival order, its id never does: it comes from the first anchor found to qualify (of
  those evaluated together, the earliest by ``(occurred_at, event_id)``; centres tried in
  sorted order). Subject is ``K``, never the fine cell, so an alert never points at a
  single address. Window ``[o.t - days, o.t]``, ``raised_at`` = ``o.t``, severity
  ``medium`` (the hub sets risk after triage).
* ``advance`` drops observations older than ``watermark - days - allowed_lateness_days``,
  and the record of periods that ended before then; events older than
  ``watermark - allowed_lateness_days`` raise :class:`LateEventError`.

A busy place holds tens of thousands of observations (58 days of them by default), so the state
keeps them by UTC day: an event copies its own day's observations, not the whole place's, and
:func:`parts` lets the changelog rewrite only the days that changed.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from itertools import chain
from typing import Annotated, Any, Final

import h3
import msgspec

from streams.rules._json import decode, encode, loads
from streams.rules._state import IssueOfReport, evolve
from streams.rules._time import UtcDatetime, advance_watermark, check_not_late, to_iso
from streams.rules.alerts import Alert, new_alert
from streams.rules.errors import MisroutedEventError, RuleInputError
from streams.rules.events import ChildReturned, IntelligenceReport, Location, MissingReported, RuleEvent
from streams.rules.settings import HotspotSettings, identity

RULE: Final = "hotspot"
# Periods are counted from a Monday, so that with days=7 they are ISO weeks.
EPOCH: Final = datetime(1970, 1, 5, tzinfo=UTC)
DAY: Final = timedelta(days=1)
HEAD: Final = "head"  # the part of a state that is not observations (see :func:`parts`)


@dataclass(frozen=True, slots=True)
class Observation(IssueOfReport):
    event_id: str
    occurred_at: UtcDatetime
    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)]  # checked when read back from JSON
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)]
    area: str
    agency: str
    children: tuple[str, ...]
    conditions: str | None  # handling-code-C conditions of the source report
    report_id: str = ""  # the report's id when it is not the event id (a re-issued report)
    issued_at: UtcDatetime | None = None  # when this issue of the report reached the hub


Day = tuple[Observation, ...]  # one UTC day's observations, ordered by (occurred_at, event_id, lat, lon)


@dataclass(frozen=True, slots=True)
class HotspotState:
    cell: str
    days: Mapping[int, Day] = field(default_factory=dict)  # by day number (days since EPOCH)
    fired: tuple[tuple[str, str], ...] = ()  # (period start ISO, alert_id), sorted
    watermark: UtcDatetime | None = None

    @property
    def observations(self) -> Day:
        """Every observation held, in order."""
        return tuple(chain.from_iterable(self.days[d] for d in sorted(self.days)))

    def to_json(self) -> dict[str, Any]:
        encoded: dict[str, Any] = encode(self)
        return encoded

    @classmethod
    def from_json(cls, raw: object) -> HotspotState:
        return decode(cls, raw)


@dataclass(frozen=True, slots=True)
class _Head:
    cell: str
    fired: tuple[tuple[str, str], ...]
    watermark: UtcDatetime | None


def parts(state: HotspotState) -> dict[str, object]:
    """A state as changelog parts: :data:`HEAD`, and one part per day named by its date. A day
    that has not changed is the same object as before, so a writer can skip it."""
    named: dict[str, object] = {HEAD: _Head(state.cell, state.fired, state.watermark)}
    for number, held in state.days.items():
        named[_date_of(number)] = held
    return named


def from_parts(key: str, encoded: Mapping[str, bytes]) -> HotspotState:
    """The state :func:`parts` wrote, from each part's JSON; :class:`RuleInputError` if the head
    is missing or a part is unreadable (naming the part)."""
    if HEAD not in encoded:
        raise RuleInputError(f"hotspot state {key!r}: no {HEAD!r} part among {sorted(encoded)}")
    head = loads(_Head, encoded[HEAD], f"{key}/{HEAD}")
    days: dict[int, Day] = {}
    for name, data in encoded.items():
        if name != HEAD:
            days[_number_of(key, name)] = loads(Day, data, f"{key}/{name}")
    return HotspotState(head.cell, days, head.fired, head.watermark)


@lru_cache(maxsize=4096)  # a checkpoint names every day of every changed cell
def _date_of(number: int) -> str:
    return (EPOCH + number * DAY).date().isoformat()


def _number_of(key: str, name: str) -> int:
    try:
        when = datetime.fromisoformat(name).replace(tzinfo=UTC)
    except ValueError:
        raise RuleInputError(f"hotspot state {key!r}: part {name!r} is neither {HEAD!r} nor a date") from None
    return _day(when)


def _day(at: datetime) -> int:
    return (at - EPOCH) // DAY


def initial(cell: str) -> HotspotState:
    return HotspotState(cell=cell)


def period_start(at: datetime, settings: HotspotSettings) -> datetime:
    """Start of the period of ``days`` days (counted from :data:`EPOCH`) that holds ``at``."""
    span = timedelta(days=settings.days)
    return EPOCH + (at - EPOCH) // span * span


def observations_of(event: RuleEvent) -> list[Observation]:
    """The located observations an event contributes (none for events without a location)."""
    if isinstance(event, IntelligenceReport):
        report_id = "" if event.report_id == event.event_id else event.report_id
        return [
            Observation(event.event_id, event.occurred_at, loc.lat, loc.lon, event.area,
                        event.agency, tuple(sorted(set(event.children))), event.conditions,
                        report_id, event.reported_at)
            for loc in event.locations
        ]
    if isinstance(event, (MissingReported, ChildReturned)) and event.location is not None:
        loc = event.location
        return [Observation(event.event_id, event.occurred_at, loc.lat, loc.lon, event.area,
                            event.agency, (event.child_id,), None)]
    return []


def keys_for(location: Location, settings: HotspotSettings) -> list[str]:
    """Coarse cells whose centre cells have ``location`` within ``neighbour_rings``."""
    return list(_keys(location.lat, location.lon, settings))


# Places recur (the same hotel, the same park), and each event asks twice: when it is re-keyed
# and when its cell checks it belongs there.
@lru_cache(maxsize=65_536)
def _keys(lat: float, lon: float, settings: HotspotSettings) -> tuple[str, ...]:
    fine = _cell(lat, lon, settings.resolution)
    coarse = {_parent(c, settings.report_resolution) for c in _disk(fine, settings.neighbour_rings)}
    return tuple(sorted(coarse))


def keys_for_event(event: RuleEvent, settings: HotspotSettings) -> list[str]:
    """Every state key an event must be sent to (empty if it has no location)."""
    return keys_for_observations(observations_of(event), settings)


def keys_for_observations(observations: Iterable[Observation], settings: HotspotSettings) -> list[str]:
    keys: set[str] = set()
    for o in observations:
        keys.update(_keys(o.lat, o.lon, settings))
    return sorted(keys)


def apply(
    state: HotspotState, event: RuleEvent, settings: HotspotSettings
) -> tuple[HotspotState, list[Alert]]:
    """Fold in an event's observations that concern this coarse cell."""
    return add(state, observations_of(event), settings)


def add(
    state: HotspotState, observations: Sequence[Observation], settings: HotspotSettings
) -> tuple[HotspotState, list[Alert]]:
    """Fold in the observations of one event (:func:`observations_of`) that concern this cell;
    what the worker sends to a cell is an event's observations, not the event."""
    if not observations:
        return state, []
    first = observations[0]
    event_id, at = first.event_id, first.occurred_at
    if any(o.event_id != event_id or o.occurred_at != at for o in observations):
        raise RuleInputError(f"observations of one event must share its id and time, got {observations!r}")
    mine = [o for o in observations if state.cell in _keys(o.lat, o.lon, settings)]
    if not mine:
        raise MisroutedEventError(f"event {event_id!r} has no location near cell {state.cell!r}")
    number = _day(at)
    today = state.days.get(number, ())
    if _holds(today, event_id, at):
        return state, []
    check_not_late(event_id, at, state.watermark, settings.allowed_lateness_days)
    held = list(today)
    for o in mine:  # held is sorted; inserting keeps it so
        insort_right(held, o, key=_order)
    days = dict(state.days)
    days[number] = tuple(held)
    return _fire(evolve(state, days=days), at, settings)


def advance(
    state: HotspotState, watermark: datetime, settings: HotspotSettings
) -> tuple[HotspotState, list[Alert]]:
    """Move the watermark on and prune; hotspots never fire on time alone."""
    mark = advance_watermark(state.watermark, watermark)
    if mark == state.watermark:  # often: the merged watermark waits for its slowest source
        return state, []
    horizon = mark - timedelta(days=settings.days + settings.allowed_lateness_days)
    days = _pruned(state.days, horizon)
    # No event that old is accepted any more, so a period that ended before the horizon can
    # never be evaluated again.
    earliest_open = horizon - timedelta(days=settings.days)
    fired = tuple(f for f in state.fired if _started_at_or_after(f[0], earliest_open))
    if len(fired) == len(state.fired):
        fired = state.fired
    return evolve(state, days=days, fired=fired, watermark=mark), []


def _pruned(days: Mapping[int, Day], horizon: datetime) -> Mapping[int, Day]:
    first = _day(horizon)
    old = [number for number in days if number < first]
    held = days.get(first, ())
    cut = bisect_left(held, horizon, key=_at) if held and held[0].occurred_at < horizon else 0
    if not old and not cut:
        return days  # the usual case: nothing to drop, and no copy
    kept = {number: obs for number, obs in days.items() if number >= first}
    if cut:
        kept[first] = held[cut:]
        if not kept[first]:
            del kept[first]
    return kept


def _between(days: Mapping[int, Day], first: datetime, last: datetime) -> list[Observation]:
    """The observations with ``first <= occurred_at <= last``, in order."""
    start, end = _day(first), _day(last)
    found: list[Observation] = []
    for number in range(start, end + 1):
        held = days.get(number)
        if held:
            lo = bisect_left(held, first, key=_at) if number == start else 0
            hi = bisect_right(held, last, key=_at) if number == end else len(held)
            if lo < hi:
                found += held[lo:hi]
    return found


def _fire(
    state: HotspotState, trigger_at: datetime, settings: HotspotSettings
) -> tuple[HotspotState, list[Alert]]:
    # Only anchors whose window [t - days, t] contains the new event can change, and only
    # those in a period that has not fired; in a busy cell that is usually none.
    window = timedelta(days=settings.days)
    marks: list[tuple[str, str]] = []
    alerts: list[Alert] = []
    # The anchors in [t, t + days] fall in at most two periods (a period is ``days`` long).
    start = period_start(trigger_at, settings)
    while start <= trigger_at + window:
        end = start + window
        period = _period_name(start)
        if not _has_fired(state.fired, period):
            first = max(start, trigger_at)
            last = min(end, trigger_at + window)
            anchors = _between(state.days, first, last)
            # Every anchor's window lies inside [first - days, last], and more observations never
            # make fewer reports, agencies or children: if all of those are not enough, no anchor
            # is. A busy cell that never qualifies (one agency, say) costs one pass, not one per anchor.
            if not anchors or not _enough(_between(state.days, first - window, last), settings):
                start = end
                continue
            for at, event_id in sorted({(o.occurred_at, o.event_id) for o in anchors if o.occurred_at < end}):
                alert = _evaluate(state, event_id, at, period, settings)
                if alert is not None:
                    marks.append((period, alert.alert_id))
                    alerts.append(alert)
                    break
        start = end
    if not marks:
        return state, []
    return evolve(state, fired=tuple(sorted({*state.fired, *marks}))), alerts


def _evaluate(
    state: HotspotState, event_id: str, at: datetime, period: str, settings: HotspotSettings
) -> Alert | None:
    rings = settings.neighbour_rings
    recent = _between(state.days, at - timedelta(days=settings.days), at)
    if not _enough(recent, settings):  # no neighbourhood can hold more than the whole cell
        return None
    anchor = [o for o in recent if o.event_id == event_id and o.occurred_at == at]
    centres = sorted({c for o in anchor for c in _disk(_fine(o, settings), rings)
                      if _parent(c, settings.report_resolution) == state.cell})
    located = [(o, _fine(o, settings)) for o in recent]
    for centre in centres:
        near = _disk(centre, rings)
        inside = [o for o, cell in located if cell in near]
        if _enough(inside, settings):
            return _alert(state.cell, period, anchor[0], inside, settings)
    return None


def _enough(inside: Sequence[Observation], settings: HotspotSettings) -> bool:
    # Agencies first: in a busy cell they are the scarcest; each count stops once it is enough.
    return (
        _at_least(settings.min_agencies, (o.agency for o in inside))
        and _at_least(settings.min_reports, (o.report_id or o.event_id for o in inside))
        and _at_least(settings.min_children, (c for o in inside for c in o.children))
    )


def _at_least(wanted: int, values: Iterable[str]) -> bool:
    if wanted <= 0:
        return True
    seen: set[str] = set()
    for value in values:
        seen.add(value)
        if len(seen) >= wanted:
            return True
    return False


def _alert(
    cell: str, period: str, anchor: Observation, inside: list[Observation], settings: HotspotSettings
) -> Alert:
    issues = _issues(inside)
    return new_alert(
        rule=RULE,
        subject_kind="cell",
        subject=cell,
        anchor_ids=[period],
        area=anchor.area,
        severity="medium",
        window_start=anchor.occurred_at - timedelta(days=settings.days),
        window_end=anchor.occurred_at,
        evidence=[first.event_id for first, _ in issues.values()],
        raised_at=anchor.occurred_at,
        settings=identity(settings),
        handling_conditions=[last.conditions for _, last in issues.values() if last.conditions is not None],
    )


def _issues(inside: Iterable[Observation]) -> dict[str, tuple[Observation, Observation]]:
    """Each report's first and latest issue among ``inside``."""
    found: dict[str, tuple[Observation, Observation]] = {}
    for o in inside:
        held = found.get(o.report)
        if held is None:
            found[o.report] = (o, o)
        else:
            first, last = held
            found[o.report] = (o if o.issue < first.issue else first, o if o.issue > last.issue else last)
    return found


def _holds(held: Day, event_id: str, at: datetime) -> bool:
    """Whether event ``event_id`` at ``at`` is already held in ``held``, its day: ``held`` is
    sorted by time, so only the observations at that time need looking at."""
    start = bisect_left(held, at, key=_at)
    end = bisect_right(held, at, key=_at)
    return any(o.event_id == event_id for o in held[start:end])


def _order(o: Observation) -> tuple[datetime, str, float, float]:
    return (o.occurred_at, o.event_id, o.lat, o.lon)


def _at(o: Observation) -> datetime:
    return o.occurred_at


@lru_cache(maxsize=4096)  # every event names the one or two periods it can fire
def _period_name(start: datetime) -> str:
    return to_iso(start)


def _has_fired(fired: tuple[tuple[str, str], ...], period: str) -> bool:
    at = bisect_left(fired, (period,))  # fired is sorted
    return at < len(fired) and fired[at][0] == period


def _started_at_or_after(period: str, cutoff: datetime) -> bool:
    start = _period_start_of(period)
    return start is not None and start >= cutoff


# Asked of every fired period at every event of the cell; a cell fires in a few periods only.
@lru_cache(maxsize=4096)
def _period_start_of(period: str) -> datetime | None:
    try:
        start = datetime.fromisoformat(period)
    except ValueError:  # state kept by the per-anchor rule, keyed by event id: nothing to keep
        return None
    return start if start.tzinfo is not None else None


def _fine(o: Observation, settings: HotspotSettings) -> str:
    return _cell(o.lat, o.lon, settings.resolution)


# H3 calls are pure functions of their arguments; caching them keeps replays fast.
@lru_cache(maxsize=65536)
def _cell(lat: float, lon: float, resolution: int) -> str:
    cell: str = h3.latlng_to_cell(lat, lon, resolution)
    return cell


@lru_cache(maxsize=65536)
def _parent(cell: str, resolution: int) -> str:
    parent: str = h3.cell_to_parent(cell, resolution)
    return parent


@lru_cache(maxsize=65536)
def _disk(cell: str, rings: int) -> frozenset[str]:
    return frozenset(h3.grid_disk(cell, rings))
