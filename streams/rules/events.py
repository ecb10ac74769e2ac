"""The rule-facing view of domain events: small frozen dataclasses, validated on construction.

Adapters translate decoded Avro into these. Identifiers (event, child, episode, entity keys)
are opaque, already pseudonymised strings. Every datetime must be timezone-aware; it is
stored converted to UTC. A bad value raises :class:`RuleInputError` naming field and value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from streams.rules._time import require_utc
from streams.rules.errors import RuleInputError

RiskLevel = Literal["low", "medium", "high"]
InterviewOutcome = Literal["completed", "declined"]
EntityKind = Literal["adult", "vehicle", "phone", "online_handle"]
HandlingCode = Literal["P", "C"]

RISK_LEVELS: tuple[RiskLevel, ...] = ("low", "medium", "high")
INTERVIEW_OUTCOMES: tuple[InterviewOutcome, ...] = ("completed", "declined")
ENTITY_KINDS: tuple[EntityKind, ...] = ("adult", "vehicle", "phone", "online_handle")
HANDLING_CODES: tuple[HandlingCode, ...] = ("P", "C")


def _text(owner: str, field: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise RuleInputError(f"{owner}.{field} must be a non-empty string, got {value!r}")


def _one_of(owner: str, field: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise RuleInputError(f"{owner}.{field} must be one of {allowed}, got {value!r}")


def _utc(obj: object, field: str) -> None:
    owner = type(obj).__name__
    # Frozen dataclass: normalising to UTC in place is the one permitted mutation.
    object.__setattr__(obj, field, require_utc(f"{owner}.{field}", getattr(obj, field)))


def _optional_location(owner: str, value: object) -> None:
    if value is not None and not isinstance(value, Location):
        raise RuleInputError(f"{owner}.location must be a Location or None, got {value!r}")


def _coordinate(field: str, value: object, limit: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RuleInputError(f"Location.{field} must be a finite number, got {value!r}")
    if not -limit <= value <= limit:
        raise RuleInputError(f"Location.{field} must be within ±{limit:g}, got {value!r}")
    return float(value)


def normalise_vrm(raw: str) -> str:
    """A vehicle registration mark as a key: upper case, no whitespace (``"ab12 cde"`` -> ``"AB12CDE"``)."""
    if not isinstance(raw, str):
        raise RuleInputError(f"vrm must be a string, got {raw!r}")
    vrm = "".join(raw.split()).upper()
    if not vrm:
        raise RuleInputError(f"vrm must contain a registration mark, got {raw!r}")
    return vrm


def normalise_phone(raw: str) -> str:
    """A UK phone number as a key: digits only, +44 written as 0 ("+44 7700 900123" -> "07700900123")."""
    if not isinstance(raw, str):
        raise RuleInputError(f"phone must be a string, got {raw!r}")
    digits = "".join(c for c in raw if c.isdigit())
    if raw.strip().startswith("+44") or (digits.startswith("44") and len(digits) == 12):
        digits = "0" + digits[2:]
    if not digits:
        raise RuleInputError(f"phone must contain digits, got {raw!r}")
    return digits


@dataclass(frozen=True, slots=True)
class Location:
    lat: float
    lon: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "lat", _coordinate("lat", self.lat, 90.0))
        object.__setattr__(self, "lon", _coordinate("lon", self.lon, 180.0))


@dataclass(frozen=True, slots=True)
class Entity:
    """An adult of concern, vehicle, phone or online handle; ``key`` already normalised."""

    kind: EntityKind
    key: str

    def __post_init__(self) -> None:
        _one_of("Entity", "kind", self.kind, ENTITY_KINDS)
        _text("Entity", "key", self.key)

    @property
    def ref(self) -> str:
        """The association rule's state key: ``kind:key``."""
        return f"{self.kind}:{self.key}"


@dataclass(frozen=True, slots=True)
class MissingReported:
    event_id: str
    child_id: str
    episode_id: str
    occurred_at: datetime
    area: str
    agency: str
    location: Location | None
    risk_level: RiskLevel

    def __post_init__(self) -> None:
        for name in ("event_id", "child_id", "episode_id", "area", "agency"):
            _text("MissingReported", name, getattr(self, name))
        _utc(self, "occurred_at")
        _optional_location("MissingReported", self.location)
        _one_of("MissingReported", "risk_level", self.risk_level, RISK_LEVELS)


@dataclass(frozen=True, slots=True)
class ChildReturned:
    """The child was found or returned: the missing episode ended."""

    event_id: str
    child_id: str
    episode_id: str
    occurred_at: datetime
    area: str
    agency: str
    location: Location | None

    def __post_init__(self) -> None:
        for name in ("event_id", "child_id", "episode_id", "area", "agency"):
            _text("ChildReturned", name, getattr(self, name))
        _utc(self, "occurred_at")
        _optional_location("ChildReturned", self.location)


@dataclass(frozen=True, slots=True)
class ReturnInterview:
    event_id: str
    child_id: str
    episode_id: str
    occurred_at: datetime
    outcome: InterviewOutcome

    def __post_init__(self) -> None:
        for name in ("event_id", "child_id", "episode_id"):
            _text("ReturnInterview", name, getattr(self, name))
        _utc(self, "occurred_at")
        _one_of("ReturnInterview", "outcome", self.outcome, INTERVIEW_OUTCOMES)


@dataclass(frozen=True, slots=True)
class IntelligenceReport:
    """A soft-intelligence report or sighting: who, what and where, as pseudonymous keys.

    ``handling_code`` 'C' means sharing is permitted with conditions, which must be stated in
    ``handling_conditions``; those conditions travel with any alert using the report.

    ``report_id`` names the report across re-issues: a police grading of a partner report keeps
    it and has a new ``event_id``. Left empty it is the ``event_id`` (a report never re-issued,
    or a re-keyed message written before it travelled). ``reported_at`` (when the issue reached
    the hub; None if not known) orders the issues of one report: the earliest is its first
    issue, the latest holds its current grading.
    """

    event_id: str
    occurred_at: datetime
    area: str
    agency: str
    children: tuple[str, ...]
    locations: tuple[Location, ...]
    entities: tuple[Entity, ...]
    handling_code: HandlingCode | None
    handling_conditions: str | None
    report_id: str = ""
    reported_at: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("event_id", "area", "agency"):
            _text("IntelligenceReport", name, getattr(self, name))
        _utc(self, "occurred_at")
        if self.report_id == "":
            object.__setattr__(self, "report_id", self.event_id)
        _text("IntelligenceReport", "report_id", self.report_id)
        if self.reported_at is not None:
            _utc(self, "reported_at")
        self._tuple_of("children", str)
        for child in self.children:
            _text("IntelligenceReport", "children[]", child)
        self._tuple_of("locations", Location)
        self._tuple_of("entities", Entity)
        if self.handling_code is not None:
            _one_of("IntelligenceReport", "handling_code", self.handling_code, HANDLING_CODES)
        if self.handling_code == "C":
            _text("IntelligenceReport", "handling_conditions", self.handling_conditions)

    def _tuple_of(self, field: str, kind: type) -> None:
        value = getattr(self, field)
        if not isinstance(value, tuple) or not all(isinstance(v, kind) for v in value):
            raise RuleInputError(
                f"IntelligenceReport.{field} must be a tuple of {kind.__name__}, got {value!r}"
            )

    @property
    def conditions(self) -> str | None:
        """The handling conditions that must travel with alerts, if the code is C."""
        return self.handling_conditions if self.handling_code == "C" else None


# A sighting is reported through the same shape as any other soft intelligence.
Sighting = IntelligenceReport

RuleEvent = MissingReported | ChildReturned | ReturnInterview | IntelligenceReport
