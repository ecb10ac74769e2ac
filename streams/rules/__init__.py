"""Correlation rules: pure, deterministic folds over event time.

No I/O, no clock, no Kafka, faust or PostgreSQL. Time comes only from events (``occurred_at``)
and from the watermark the adapter passes to ``advance``; every datetime must be
timezone-aware and is handled in UTC (a naive one raises :class:`RuleInputError`).

Each rule is a module with the same fold shape, state per key::

    state = rule.initial(key)
    state, alerts = rule.apply(state, event, settings)      # any RuleEvent; others ignored
    state, alerts = rule.advance(state, watermark, settings)  # time-driven firing and pruning

* ``repeat_missing``: key = child id; alert ``repeat_missing``.
* ``return_interview``: key = child id; alerts ``return_interview_overdue`` and
  ``return_interview_resolved``.
* ``hotspot``: key = coarse H3 cell; route with ``hotspot.keys_for_event``; alert ``hotspot``.
* ``association``: key = entity ``kind:key``; route with ``association.keys_for``; alert
  ``association``.

Each rule module's docstring states its exact semantics and window boundaries.

State is an immutable dataclass with ``to_json()`` / ``from_json()``: store the returned
value, never mutate it. Alerts carry a stable ``alert_id`` (see :mod:`streams.rules.alerts`),
so replaying the same events gives the same alerts and sinks upsert on the id. Events older
than the watermark minus ``allowed_lateness_days`` raise :class:`LateEventError` for the
adapter to dead-letter. Settings per area: :class:`AreaSettings`.
"""

from streams.rules import association, hotspot, repeat_missing, return_interview
from streams.rules.alerts import Alert, alert_id, new_alert
from streams.rules.errors import LateEventError, MisroutedEventError, RuleInputError
from streams.rules.events import (
    ChildReturned,
    Entity,
    IntelligenceReport,
    Location,
    MissingReported,
    ReturnInterview,
    RuleEvent,
    Sighting,
    normalise_vrm,
)
from streams.rules.settings import (
    AreaSettings,
    AssociationSettings,
    HotspotSettings,
    RepeatMissingSettings,
    ReturnInterviewSettings,
    identity,
)

__all__ = [
    "Alert",
    "AreaSettings",
    "AssociationSettings",
    "ChildReturned",
    "Entity",
    "HotspotSettings",
    "IntelligenceReport",
    "LateEventError",
    "Location",
    "MisroutedEventError",
    "MissingReported",
    "RepeatMissingSettings",
    "ReturnInterview",
    "ReturnInterviewSettings",
    "RuleEvent",
    "RuleInputError",
    "Sighting",
    "alert_id",
    "association",
    "hotspot",
    "identity",
    "new_alert",
    "normalise_vrm",
    "repeat_missing",
    "return_interview",
]
