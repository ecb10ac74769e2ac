"""What the rules emit: an :class:`Alert`, with a stable id, its evidence and its window.

Alert id
    ``alert_id(rule, subject, anchor_ids, settings)`` is the first 32 hex characters of the
    SHA-256 of the canonical JSON (keys sorted, no whitespace, UTF-8) of
    ``{"anchors": sorted unique anchor ids, "rule": rule, "settings": [[name, value], ...]
    sorted by name, "subject": subject}``. The anchor is the event (or episode) the alert is
    raised for. Replaying the same events under the same settings gives the same ids, so sinks
    upsert on ``alert_id``; changed settings give different ids, never a silent overwrite.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Literal

from streams.rules._json import decode, encode
from streams.rules._time import UtcDatetime, require_utc
from streams.rules.errors import RuleInputError

RuleName = Literal[
    "repeat_missing",
    "return_interview_overdue",
    "return_interview_resolved",
    "hotspot",
    "association",
]
SubjectKind = Literal["child", "cell", "entity"]
Severity = Literal["low", "medium", "high"]
SettingPairs = tuple[tuple[str, int], ...]


def alert_id(rule: str, subject: str, anchor_ids: Iterable[str], settings: SettingPairs) -> str:
    # The canonical JSON written out key by key (in sorted order) rather than through
    # json.dumps(sort_keys=True) of a dict: the same bytes, in a third of the time.
    canonical = (
        f'{{"anchors":{_dumps(sorted(set(anchor_ids)))},"rule":{_dumps(rule)},'
        f'"settings":{_settings_json(settings)},"subject":{_dumps(subject)}}}'
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


# Rules re-check each unfired anchor by its alert id on every event of a subject: recent ids are kept.
@lru_cache(maxsize=65_536)
def anchor_alert_id(rule: str, subject: str, anchor_id: str, settings: SettingPairs) -> str:
    """:func:`alert_id` of an alert with the one anchor ``anchor_id``."""
    return alert_id(rule, subject, [anchor_id], settings)


_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@lru_cache(maxsize=256)
def _settings_json(settings: SettingPairs) -> str:
    return _dumps([[name, value] for name, value in sorted(settings)])


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert. ``evidence``, ``settings`` and ``handling_conditions`` are kept sorted."""

    alert_id: str
    rule: RuleName
    subject_kind: SubjectKind
    subject: str
    area: str
    severity: Severity
    window_start: UtcDatetime
    window_end: UtcDatetime
    evidence: tuple[str, ...]
    raised_at: UtcDatetime
    settings: SettingPairs
    handling_conditions: tuple[str, ...] = ()
    resolves: str | None = None

    def __post_init__(self) -> None:
        for name in ("window_start", "window_end", "raised_at"):
            object.__setattr__(self, name, require_utc(f"Alert.{name}", getattr(self, name)))
        if self.window_start > self.window_end:
            raise RuleInputError(
                f"Alert.window_start {self.window_start.isoformat()} is after "
                f"window_end {self.window_end.isoformat()}"
            )
        object.__setattr__(self, "evidence", tuple(sorted(set(self.evidence))))
        object.__setattr__(self, "settings", tuple(sorted(self.settings)))
        object.__setattr__(
            self, "handling_conditions", tuple(sorted(set(self.handling_conditions)))
        )

    def to_json(self) -> dict[str, Any]:
        encoded: dict[str, Any] = encode(self)
        return encoded

    @classmethod
    def from_json(cls, raw: object) -> Alert:
        return decode(cls, raw, "alert")


def new_alert(
    *,
    rule: RuleName,
    subject_kind: SubjectKind,
    subject: str,
    anchor_ids: Iterable[str],
    area: str,
    severity: Severity,
    window_start: datetime,
    window_end: datetime,
    evidence: Iterable[str],
    raised_at: datetime,
    settings: SettingPairs,
    handling_conditions: Iterable[str] = (),
    resolves: str | None = None,
) -> Alert:
    """Build an alert whose id is derived from rule, subject, anchors and settings."""
    return Alert(
        alert_id=alert_id(rule, subject, anchor_ids, settings),
        rule=rule,
        subject_kind=subject_kind,
        subject=subject,
        area=area,
        severity=severity,
        window_start=window_start,
        window_end=window_end,
        evidence=tuple(evidence),
        raised_at=raised_at,
        settings=settings,
        handling_conditions=tuple(handling_conditions),
        resolves=resolves,
    )
