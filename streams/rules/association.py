"""Association: one adult, vehicle, phone or online handle seen with several children.

State is per entity, keyed ``kind:key`` (:attr:`Entity.ref`); ``initial(ref)``. The adapter
sends each :class:`IntelligenceReport` to every key in :func:`keys_for`. Semantics:

* A report ``r`` naming the entity *qualifies* when the reports naming it with
  ``occurred_at`` in ``[r.t - days, r.t]`` (both inclusive) name at least ``min_children``
  distinct children. The first report to do so is the one that brings the K-th child; each
  later report inside such a window qualifies too and fires its own alert (new evidence of
  an active network), as repeat missing does for each further episode.
* Reports, not messages: a re-issue of a report (same ``report_id``, new event id: a police
  grading of a partner report, restating its time, children and entities) is held beside its
  other issues, names the same children, and never fires again for the report.
* Each qualifying report fires exactly once: id from (rule, ``kind:key``, the event id of the
  report's *first* issue held when it fired (earliest by ``(reported_at, event_id)``),
  settings); evidence = the first issue's event id of each report in its window when it fired;
  window ``[r.t - days, r.t]``; ``raised_at`` = ``r.t``; severity ``medium``; handling-code-C
  conditions of each evidence report's *latest* issue (its current grading) travel in
  ``handling_conditions``.
* A report seen again (same event id) is ignored; adding reports never un-qualifies one, so
  any permutation of the same reports fires the same alert ids. Re-issues change no alert id
  nor evidence when each report's original is held by the time the report qualifies (the
  publisher's order: both on the partner topic, under the same key); a re-issue that arrives
  before its original and completes a window alone anchors the alert on itself (the report
  still fires once).
* Cost: a new report re-checks only the reports whose window it falls in (at or after it,
  within ``days``) that have not fired, looked up by time; the state records the settings
  every held report was last checked under (``checked``), and under other settings (another
  area's, or a state restored from before it was recorded) every held report is re-checked,
  as each one always was. One report more about an entity with 2,000 costs about a
  millisecond, not a pass over every report's window.
* ``advance`` drops reports older than ``watermark - days - allowed_lateness_days``;
  reports older than ``watermark - allowed_lateness_days`` raise :class:`LateEventError`.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort_right
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from itertools import chain
from operator import attrgetter
from typing import Any, Final

from streams.rules._json import decode, encode
from streams.rules._state import IssueOfReport, evolve
from streams.rules._time import UtcDatetime, advance_watermark, check_not_late
from streams.rules.alerts import Alert, SettingPairs, anchor_alert_id, new_alert
from streams.rules.errors import MisroutedEventError
from streams.rules.events import IntelligenceReport, RuleEvent
from streams.rules.settings import AssociationSettings, identity

RULE: Final = "association"


@dataclass(frozen=True, slots=True)
class Link(IssueOfReport):
    """A report naming the entity, as the rule remembers it."""

    event_id: str
    occurred_at: UtcDatetime
    area: str
    children: tuple[str, ...]
    conditions: str | None
    report_id: str = ""  # the report's id when it is not the event id (a re-issued report)
    issued_at: UtcDatetime | None = None  # when this issue of the report reached the hub


@dataclass(frozen=True, slots=True)
class AssociationState:
    entity: str  # kind:key
    links: tuple[Link, ...] = ()  # ordered by (occurred_at, event_id)
    fired: tuple[tuple[str, str], ...] = ()  # (report id, alert_id), sorted
    watermark: UtcDatetime | None = None
    # The settings every held report was last checked under (empty: not known, check them all).
    checked: SettingPairs = ()

    def to_json(self) -> dict[str, Any]:
        encoded: dict[str, Any] = encode(self)
        return encoded

    @classmethod
    def from_json(cls, raw: object) -> AssociationState:
        return decode(cls, raw)


def initial(entity_ref: str) -> AssociationState:
    return AssociationState(entity=entity_ref)


def keys_for(report: IntelligenceReport) -> list[str]:
    """Every state key a report must be sent to: its entities as ``kind:key``."""
    return sorted({e.ref for e in report.entities})


def apply(
    state: AssociationState, event: RuleEvent, settings: AssociationSettings
) -> tuple[AssociationState, list[Alert]]:
    """Fold in an intelligence report; other events leave state unchanged."""
    if not isinstance(event, IntelligenceReport):
        return state, []
    if state.entity not in keys_for(event):
        raise MisroutedEventError(
            f"IntelligenceReport {event.event_id!r} does not name entity {state.entity!r}"
        )
    links = state.links
    at = event.occurred_at
    lo, hi = bisect_left(links, at, key=_at), bisect_right(links, at, key=_at)
    if any(links[i].event_id == event.event_id for i in range(lo, hi)):  # same event, same time
        return state, []
    check_not_late(event.event_id, event.occurred_at, state.watermark, settings.allowed_lateness_days)
    report_id = "" if event.report_id == event.event_id else event.report_id
    link = Link(event.event_id, event.occurred_at, event.area,
                tuple(sorted(set(event.children))), event.conditions, report_id, event.reported_at)
    held = list(links)
    insort_right(held, link, key=_order)
    return _fire(evolve(state, links=tuple(held)), link, settings)


def advance(
    state: AssociationState, watermark: datetime, settings: AssociationSettings
) -> tuple[AssociationState, list[Alert]]:
    """Move the watermark on and prune; associations never fire on time alone."""
    mark = advance_watermark(state.watermark, watermark)
    horizon = mark - timedelta(days=settings.days + settings.allowed_lateness_days)
    if not state.links or state.links[0].occurred_at >= horizon:  # links are in time order
        # Nothing to prune: fired reports all still have their links.
        return (state, []) if mark == state.watermark else (evolve(state, watermark=mark), [])
    links = tuple(x for x in state.links if x.occurred_at >= horizon)
    held = {x.report for x in links}
    fired = tuple(f for f in state.fired if f[0] in held)
    return evolve(state, links=links, fired=fired, watermark=mark), []


def _fire(
    state: AssociationState, added: Link, settings: AssociationSettings
) -> tuple[AssociationState, list[Alert]]:
    # A report's window is the ``days`` before it, so the link just added can only complete the
    # windows of reports at or after it and at most ``days`` later (itself among them): under the
    # settings every held report was last checked with, only those are checked again. Under other
    # settings (state restored from before this was kept, or a report of an area with other
    # settings), every report is.
    pairs = identity(settings)
    links = state.links
    days = _days(settings.days)
    if state.checked == pairs:
        first = bisect_left(links, added.occurred_at, key=_at)
        last = bisect_right(links, added.occurred_at + days, key=_at)
    else:
        first, last = 0, len(links)
    fired_now: set[str] = set()
    unfired = [i for i in range(first, last) if not _has_fired(state, i, pairs)]
    marks: list[tuple[str, str]] = []
    alerts: list[Alert] = []
    for i in _qualifying(links, unfired, days, settings.min_children):
        link = links[i]
        if link.report in fired_now:
            continue  # another issue of the same report, at the same time, has just fired
        issues = [x for x in links if x.report == link.report]
        anchor = min(issues, key=_issue)
        this_id = anchor_alert_id(RULE, state.entity, anchor.event_id, pairs)
        window = links[bisect_left(links, link.occurred_at - days, key=_at):
                       bisect_right(links, link.occurred_at, key=_at)]
        fired_now.add(link.report)
        marks.append((anchor.report, this_id))
        alerts.append(_alert(state.entity, anchor, list(window), settings))
    fired = state.fired
    if marks:
        merged = list(fired)
        for mark in marks:
            if mark not in merged:
                insort_right(merged, mark)
        fired = tuple(merged)
    if fired is state.fired and state.checked == pairs:
        return state, alerts
    return evolve(state, fired=fired, checked=pairs), alerts


def _has_fired(state: AssociationState, index: int, pairs: SettingPairs) -> bool:
    """Whether the report of ``state.links[index]`` has fired under these settings (anchored on
    whichever of its issues was held first)."""
    link = state.links[index]
    report, fired = link.report, state.fired
    at = bisect_left(fired, (report,))  # fired is sorted
    raised = set()
    while at < len(fired) and fired[at][0] == report:
        raised.add(fired[at][1])
        at += 1
    if not raised:
        return False
    links = state.links
    # Its issues restate its time: look there first, then (another settings', or an issue of
    # another time) everywhere.
    lo, hi = bisect_left(links, link.occurred_at, key=_at), bisect_right(links, link.occurred_at, key=_at)
    for x in chain(links[lo:hi], links):
        if x.report == report and anchor_alert_id(RULE, state.entity, x.event_id, pairs) in raised:
            return True
    return False


def _qualifying(links: tuple[Link, ...], candidates: list[int], days: timedelta, wanted: int) -> list[int]:
    """Those of ``candidates`` (indices into ``links``, in order) whose window ``[t - days, t]``
    names at least ``wanted`` distinct children."""
    if not candidates:
        return []
    if len(candidates) == 1:  # the usual case: the new report, looked at from it backwards
        i = candidates[0]
        t = links[i].occurred_at
        lo, hi = bisect_left(links, t - days, key=_at), bisect_right(links, t, key=_at)
        seen: set[str] = set()
        for j in range(hi - 1, lo - 1, -1):
            seen.update(links[j].children)
            if len(seen) >= wanted:
                return [i]
        return []
    # Several (a late report, or every report under new settings): one sweep of their windows.
    found: list[int] = []
    counts: Counter[str] = Counter()
    left = right = bisect_left(links, links[candidates[0]].occurred_at - days, key=_at)
    for i in candidates:
        t = links[i].occurred_at
        while right < len(links) and links[right].occurred_at <= t:
            counts.update(links[right].children)
            right += 1
        while links[left].occurred_at < t - days:
            counts.subtract(links[left].children)
            for child in links[left].children:
                if counts[child] <= 0:
                    del counts[child]
            left += 1
        if len(counts) >= wanted:
            found.append(i)
    return found


def _order(link: Link) -> tuple[datetime, str]:
    return (link.occurred_at, link.event_id)


_at = attrgetter("occurred_at")


@cache
def _days(days: int) -> timedelta:
    return timedelta(days=days)


def _issue(link: Link) -> tuple[datetime, str]:
    return link.issue


def _issues(window: list[Link]) -> dict[str, tuple[Link, Link]]:
    """Each report's first and latest issue among ``window``."""
    found: dict[str, tuple[Link, Link]] = {}
    for x in window:
        held = found.get(x.report)
        if held is None:
            found[x.report] = (x, x)
        else:
            first, last = held
            found[x.report] = (x if x.issue < first.issue else first, x if x.issue > last.issue else last)
    return found


def _alert(entity: str, anchor: Link, window: list[Link], settings: AssociationSettings) -> Alert:
    issues = _issues(window)
    return new_alert(
        rule=RULE,
        subject_kind="entity",
        subject=entity,
        anchor_ids=[anchor.event_id],
        area=anchor.area,
        severity="medium",
        window_start=anchor.occurred_at - timedelta(days=settings.days),
        window_end=anchor.occurred_at,
        evidence=[first.event_id for first, _ in issues.values()],
        raised_at=anchor.occurred_at,
        settings=identity(settings),
        handling_conditions=[last.conditions for _, last in issues.values() if last.conditions is not None],
    )
