"""The one exception family the rules raise.

Every error names the field (or event) and the value, so an adapter can put the input on a
dead-letter topic with a reason a person can act on.
"""

from __future__ import annotations

from datetime import datetime


class RuleInputError(ValueError):
    """An input to a rule is invalid: wrong type, out of range, naive datetime, misrouted."""


class MisroutedEventError(RuleInputError):
    """An event reached the state of a key it does not belong to (an adapter bug)."""


class LateEventError(RuleInputError):
    """An event is older than the state's watermark minus the allowed lateness.

    State older than that horizon may already be pruned, so applying the event could double
    count or re-fire; it is refused instead, for the adapter to dead-letter.
    """

    def __init__(self, event_id: str, occurred_at: datetime, horizon: datetime) -> None:
        self.event_id = event_id
        self.occurred_at = occurred_at
        self.horizon = horizon
        super().__init__(
            f"event {event_id!r} occurred_at {occurred_at.isoformat()} is older than the "
            f"lateness horizon {horizon.isoformat()}"
        )
