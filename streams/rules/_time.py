"""Event-time helpers: every datetime the rules see is timezone-aware and converted to UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import msgspec

from streams.rules.errors import LateEventError, RuleInputError

# A datetime field of rule state: read back from JSON only with its zone (written in UTC).
UtcDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


def require_utc(field: str, value: object) -> datetime:
    """Return ``value`` in UTC; refuse anything that is not an aware datetime."""
    if not isinstance(value, datetime):
        raise RuleInputError(f"{field} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise RuleInputError(
            f"{field} must be timezone-aware (UTC), got naive datetime {value.isoformat()}"
        )
    return value.astimezone(UTC)


def to_iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def from_iso(field: str, raw: object) -> datetime:
    if not isinstance(raw, str):
        raise RuleInputError(f"{field} must be an ISO 8601 string, got {raw!r}")
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise RuleInputError(f"{field} must be an ISO 8601 datetime, got {raw!r}") from None
    return require_utc(field, parsed)


def advance_watermark(old: datetime | None, new: datetime) -> datetime:
    """Watermarks only move forward: a smaller one (another partition lagging) is ignored."""
    new = require_utc("watermark", new)
    return new if old is None or new > old else old


def check_not_late(
    event_id: str, occurred_at: datetime, watermark: datetime | None, lateness_days: int
) -> None:
    if watermark is None:
        return
    horizon = watermark - timedelta(days=lateness_days)
    if occurred_at < horizon:
        raise LateEventError(event_id, occurred_at, horizon)
