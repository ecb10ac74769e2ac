"""Rule settings: one frozen dataclass per rule, with defaults, and per-area overrides.

Defaults
    repeat missing: 3 episodes in 90 days; return interview: 72 hours, the overdue alert raised
    once the watermark is ``out_of_order_hours`` (6) past the deadline; hotspot: H3 resolution 8
    cells, reported at coarse resolution 6 (so an alert never points at a home), 1 ring of
    neighbours, 28 days, at least 5 reports from 2 agencies about 2 children; association:
    3 children in 90 days. Every rule accepts events up to ``allowed_lateness_days`` (30)
    behind its watermark and keeps state that long.

``allowed_lateness_days`` only bounds state and ``out_of_order_hours`` only delays firing; neither
is part of an alert's identity. Every other field is (see :func:`identity`), so a changed
threshold yields new alert ids.
Nothing here reads the environment: the composition root passes the overrides in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from functools import lru_cache
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from streams.rules.alerts import SettingPairs
from streams.rules.errors import RuleInputError

_LATENESS: dict[str, Any] = {"min": 0, "identity": False}


def _at_least(minimum: int, maximum: int | None = None) -> dict[str, Any]:
    return {"min": minimum, "max": maximum}


def _validate(settings: object) -> None:
    owner = type(settings).__name__
    for f in fields(settings):  # type: ignore[arg-type]
        value = getattr(settings, f.name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise RuleInputError(f"{owner}.{f.name} must be a whole number, got {value!r}")
        low, high = f.metadata.get("min"), f.metadata.get("max")
        if low is not None and value < low:
            raise RuleInputError(f"{owner}.{f.name} must be at least {low}, got {value}")
        if high is not None and value > high:
            raise RuleInputError(f"{owner}.{f.name} must be at most {high}, got {value}")


@dataclass(frozen=True)
class RepeatMissingSettings:
    count: int = field(default=3, metadata=_at_least(1))
    days: int = field(default=90, metadata=_at_least(1))
    allowed_lateness_days: int = field(default=30, metadata=_LATENESS)

    def __post_init__(self) -> None:
        _validate(self)


@dataclass(frozen=True)
class ReturnInterviewSettings:
    hours: int = field(default=72, metadata=_at_least(1))
    out_of_order_hours: int = field(default=6, metadata=_LATENESS)
    allowed_lateness_days: int = field(default=30, metadata=_LATENESS)

    def __post_init__(self) -> None:
        _validate(self)


@dataclass(frozen=True)
class HotspotSettings:
    resolution: int = field(default=8, metadata=_at_least(0, 15))
    report_resolution: int = field(default=6, metadata=_at_least(0, 15))
    neighbour_rings: int = field(default=1, metadata=_at_least(0))
    days: int = field(default=28, metadata=_at_least(1))
    min_reports: int = field(default=5, metadata=_at_least(1))
    min_agencies: int = field(default=2, metadata=_at_least(1))
    min_children: int = field(default=2, metadata=_at_least(0))
    allowed_lateness_days: int = field(default=30, metadata=_LATENESS)

    def __post_init__(self) -> None:
        _validate(self)
        if self.report_resolution > self.resolution:
            raise RuleInputError(
                f"HotspotSettings.report_resolution must not be finer than resolution "
                f"{self.resolution}, got {self.report_resolution}"
            )


@dataclass(frozen=True)
class AssociationSettings:
    min_children: int = field(default=3, metadata=_at_least(1))
    days: int = field(default=90, metadata=_at_least(1))
    allowed_lateness_days: int = field(default=30, metadata=_LATENESS)

    def __post_init__(self) -> None:
        _validate(self)


RuleSettings = RepeatMissingSettings | ReturnInterviewSettings | HotspotSettings | AssociationSettings
S = TypeVar(
    "S", RepeatMissingSettings, ReturnInterviewSettings, HotspotSettings, AssociationSettings
)


@lru_cache(maxsize=256)  # settings are frozen, and asked for on every alert id
def identity(settings: RuleSettings) -> SettingPairs:
    """The settings that define an alert, as sorted (name, value) pairs."""
    return tuple(
        sorted(
            (f.name, getattr(settings, f.name))
            for f in fields(settings)
            if f.metadata.get("identity", True)
        )
    )


@dataclass(frozen=True)
class AreaSettings(Generic[S]):
    """A rule's default settings plus whole-settings overrides per area name."""

    default: S
    overrides: Mapping[str, S] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "overrides", MappingProxyType(dict(self.overrides)))

    def for_area(self, area: str) -> S:
        return self.overrides.get(area, self.default)

    @classmethod
    def from_changes(cls, default: S, changes: Mapping[str, Mapping[str, int]]) -> AreaSettings[S]:
        """Build from partial overrides, e.g. ``{"north": {"days": 30}}`` for 3 in 30 days."""
        overrides: dict[str, S] = {}
        known = {f.name for f in fields(default)}
        for area, values in changes.items():
            unknown = sorted(set(values) - known)
            if unknown:
                raise RuleInputError(
                    f"override for area {area!r} names unknown {type(default).__name__} "
                    f"field(s) {unknown}"
                )
            overrides[area] = replace(default, **values)
        return cls(default, overrides)
