"""Domain rules the Avro types cannot say, checked on records already structurally valid.

Each check raises SchemaViolation naming the field path and the offending value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas import catalogue as cat
from schemas.errors import SchemaViolation

Record = dict[str, Any]

# Clocks at different agencies disagree a little; a report minutes "before" its event is skew,
# not an error worth losing the report over.
CLOCK_SKEW = timedelta(minutes=5)

SNOMED_CSE_CODES: Mapping[str, str] = {
    "716565009": "At increased risk of child sexual exploitation",
    "713834002": "Victim of child sexual exploitation",
}

_POSTCODE_RE = re.compile(r"[A-Z]{1,2}[0-9][A-Z0-9]? ?[0-9][A-Z]{2}")
_PHONE_RE = re.compile(r"(?:\+44|0)[0-9]{9,10}")
_PHONE_PUNCTUATION = str.maketrans("", "", " -()")
MAX_UPRN = 999_999_999_999
# No agency record describes an event before this; an earlier year is a typo or a placeholder.
EARLIEST_EVENT = datetime(1900, 1, 1, tzinfo=UTC)


def nhs_number_problem(value: str) -> str | None:
    """Why ``value`` is not a valid NHS number, or None if it is.

    The tenth digit is a modulus-11 check digit over the first nine weighted 10 down to 2;
    a remainder giving 10 means the number was never issued.
    """
    if len(value) != 10 or not value.isascii() or not value.isdigit():
        return "NHS number must be exactly 10 digits, without spaces"
    # Written out on the ASCII codes (digit + 48, weights summing to 54): this runs for every
    # child of every event, and a generator over the digits costs several times as much.
    d = value.encode()
    total = 10 * d[0] + 9 * d[1] + 8 * d[2] + 7 * d[3] + 6 * d[4] + 5 * d[5] + 4 * d[6] + 3 * d[7] + 2 * d[8]
    check = 11 - (total - 48 * 54) % 11
    if check == 11:
        check = 0
    if check == 10 or check != d[9] - 48:
        return "NHS number fails the modulus-11 check digit"
    return None


def nhs_check_digit(first_nine: str) -> int | None:
    """The check digit completing ``first_nine`` digits, or None when no valid number exists."""
    total = sum(int(d) * w for d, w in zip(first_nine, range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        return 0
    return None if check == 10 else check


def _fail(field: str, value: Any, message: str) -> SchemaViolation:
    return SchemaViolation(field, value, message)


def _not_blank(record: Mapping[str, Any], field: str, path: str = "") -> None:
    value = record[field]
    if value is not None and not value.strip():
        raise _fail(path + field, value, "must not be blank")


def _nhs(record: Mapping[str, Any], field: str, path: str = "") -> None:
    value = record[field]
    if value is not None:
        problem = nhs_number_problem(value)
        if problem:
            raise _fail(path + field, value, problem)


def _phone(record: Mapping[str, Any], field: str) -> None:
    value = record[field]
    if not _PHONE_RE.fullmatch(value.translate(_PHONE_PUNCTUATION)):
        raise _fail(field, value, "expected a UK phone number such as 0116 496 0123 or +44 116 496 0123")


def _times(record: Mapping[str, Any]) -> None:
    for name in ("occurred_at", "reported_at"):
        if record[name] < EARLIEST_EVENT:
            raise _fail(name, record[name], f"is before {EARLIEST_EVENT.year}")
    # Subtracting (not adding the skew) cannot overflow at datetime.max.
    if record["occurred_at"] - record["reported_at"] > CLOCK_SKEW:
        raise _fail(
            "reported_at",
            record["reported_at"],
            f"reported before it occurred (occurred_at is {record['occurred_at'].isoformat()})",
        )


def check_not_future(record: Mapping[str, Any], published_at: datetime) -> None:
    """An event's times are not after ``published_at`` (the Kafka record's timestamp, or now for
    a publisher) by more than the clock skew: a future-dated event is refused, so it can neither
    move a watermark nor overflow a rule's deadline (9999-12-31 plus 72 hours)."""
    for name in ("occurred_at", "reported_at"):
        value = record.get(name)
        if isinstance(value, datetime) and value - published_at > CLOCK_SKEW:
            raise _fail(
                name, value,
                f"is in the future: after the message was published ({published_at.isoformat()}) "
                f"by more than the {CLOCK_SKEW} clock skew allowed",
            )


def _location(loc: Mapping[str, Any], path: str) -> None:
    lat, lon = loc["lat"], loc["lon"]
    if (lat is None) != (lon is None):
        missing = "lon" if lon is None else "lat"
        raise _fail(path + missing, None, "lat and lon are given together")
    if lat is not None:
        if not (math.isfinite(lat) and -90.0 <= lat <= 90.0):
            raise _fail(path + "lat", lat, "latitude must be between -90 and 90 degrees")
        if not (math.isfinite(lon) and -180.0 <= lon <= 180.0):
            raise _fail(path + "lon", lon, "longitude must be between -180 and 180 degrees")
    postcode = loc["postcode"]
    if postcode is not None and not _POSTCODE_RE.fullmatch(postcode):
        raise _fail(path + "postcode", postcode, "expected a UK postcode in capitals, e.g. LE11 3AB")
    uprn = loc["uprn"]
    if uprn is not None and not 0 < uprn <= MAX_UPRN:
        raise _fail(path + "uprn", uprn, "UPRN must be a positive number of at most 12 digits")
    _not_blank(loc, "premises_name", path)
    if lat is None and postcode is None and uprn is None and loc["premises_name"] is None:
        raise _fail(
            path.rstrip("."), dict(loc), "a location needs lat/lon, a postcode, a UPRN or a premises name"
        )


def check_intelligence_report(r: Record) -> None:
    for field in ("event_id", "report_id", "area", "reporting_agency", "narrative"):
        _not_blank(r, field)
    _times(r)
    seen_keys: set[str] = set()
    for i, person in enumerate(r["persons"]):
        path = f"persons[{i}]."
        _not_blank(person, "person_key", path)
        if person["person_key"] in seen_keys:
            raise _fail(path + "person_key", person["person_key"], "person named twice in one report")
        seen_keys.add(person["person_key"])
        if person["nhs_number"] is not None and person["role"] != "child_at_risk":
            raise _fail(
                path + "nhs_number", person["nhs_number"], "NHS numbers are given only for a child_at_risk"
            )
        _nhs(person, "nhs_number", path)
    for i, obj in enumerate(r["objects"]):
        _not_blank(obj, "value", f"objects[{i}].")
    for i, loc in enumerate(r["locations"]):
        _location(loc, f"locations[{i}].")
    indicators = r["cse_indicators"]
    if len(set(indicators)) != len(indicators):
        dup = next(c for i, c in enumerate(indicators) if c in indicators[:i])
        raise _fail("cse_indicators", dup, "indicator listed more than once")
    grading = r["grading"]
    if grading is not None:
        assessment = grading["intelligence_assessment"]
        if not 1 <= assessment <= 5:
            raise _fail("grading.intelligence_assessment", assessment, "intelligence assessment is 1 to 5")
        conditions = grading["handling_conditions"]
        if grading["handling_code"] == "C":
            if conditions is None or not conditions.strip():
                raise _fail(
                    "grading.handling_conditions",
                    conditions,
                    "handling code C requires the conditions to be stated",
                )
        elif conditions is not None:
            raise _fail(
                "grading.handling_conditions",
                conditions,
                "conditions are stated only with handling code C (P permits sharing without conditions)",
            )


# Fields each missing-episode kind must carry, and fields it must leave null.
_EPISODE_REQUIRED: Mapping[str, tuple[str, ...]] = {
    "reported_missing": ("risk_level", "missing_from"),
    "found_or_returned": (),
    "return_interview": ("interview_outcome",),
    "risk_reviewed": ("risk_level",),
}
_EPISODE_ALLOWED: Mapping[str, frozenset[str]] = {
    "reported_missing": frozenset(
        {"risk_level", "missing_from", "placing_authority", "host_authority", "last_seen"}
    ),
    "found_or_returned": frozenset({"found"}),
    "return_interview": frozenset({"interview_outcome"}),
    "risk_reviewed": frozenset({"risk_level"}),
}
_EPISODE_OPTIONAL_FIELDS = (
    "risk_level",
    "missing_from",
    "placing_authority",
    "host_authority",
    "last_seen",
    "found",
    "interview_outcome",
)


def check_missing_episode(r: Record) -> None:
    for field in ("event_id", "episode_id", "area", "agency", "person_key"):
        _not_blank(r, field)
    _times(r)
    _nhs(r, "nhs_number")
    kind = r["kind"]
    for field in _EPISODE_REQUIRED[kind]:
        if r[field] is None:
            raise _fail(field, None, f"required when kind is {kind}")
    allowed = _EPISODE_ALLOWED[kind]
    for field in _EPISODE_OPTIONAL_FIELDS:
        if r[field] is not None and field not in allowed:
            raise _fail(field, r[field], f"not given when kind is {kind}")
    if kind == "reported_missing" and r["missing_from"] == "care":
        for field in ("placing_authority", "host_authority"):
            if r[field] is None:
                raise _fail(field, None, "required when a child is missing from care")
    for field in ("placing_authority", "host_authority"):
        _not_blank(r, field)
    for field in ("last_seen", "found"):
        if r[field] is not None:
            _location(r[field], field + ".")


def check_hub_decision(r: Record) -> None:
    for field in ("event_id", "person_key", "reason", "decided_by", "area", "owning_authority"):
        _not_blank(r, field)
    _times(r)
    _nhs(r, "nhs_number")
    if r["kind"] == "risk_level_set" and r["risk_level"] is None:
        raise _fail("risk_level", None, "required when kind is risk_level_set")
    _phone(r, "contact_phone")


def check_alert(r: Record) -> None:
    for field in ("event_id", "alert_id", "rule", "subject_kind", "subject", "area"):
        _not_blank(r, field)
    if r["window_end"] < r["window_start"]:
        raise _fail(
            "window_end",
            r["window_end"],
            f"window ends before it starts (window_start is {r['window_start'].isoformat()})",
        )
    if not r["evidence"]:
        raise _fail("evidence", r["evidence"], "an alert names at least one evidence event id")
    for i, event_id in enumerate(r["evidence"]):
        if not event_id.strip():
            raise _fail(f"evidence[{i}]", event_id, "must not be blank")


def check_health_cse_flag(r: Record) -> None:
    for field in ("event_id", "flag_id", "author", "owning_authority"):
        _not_blank(r, field)
    _times(r)
    _nhs(r, "nhs_number")
    expected = SNOMED_CSE_CODES.get(r["code"])
    if expected is None:
        raise _fail("code", r["code"], f"expected a SNOMED CT CSE code: {', '.join(SNOMED_CSE_CODES)}")
    if r["display"] != expected:
        raise _fail("display", r["display"], f"display for {r['code']} is {expected!r}")
    if r["period_end"] is not None and r["period_end"] < r["period_start"]:
        start = r["period_start"].isoformat()
        raise _fail("period_end", r["period_end"], f"ends before period_start {start}")
    if r["status"] == "inactive" and (r["status_reason"] is None or not r["status_reason"].strip()):
        raise _fail("status_reason", r["status_reason"], "a flag is made inactive only with a stated reason")
    _phone(r, "contact_phone")


def check_dead_letter(r: Record) -> None:
    for field in ("event_id", "original_topic", "reason"):
        _not_blank(r, field)
    partition, offset = r["original_partition"], r["original_offset"]
    if (partition is None) != (offset is None):
        field = "original_offset" if offset is None else "original_partition"
        raise _fail(field, None, "partition and offset are given together")
    if partition is not None and partition < 0:
        raise _fail("original_partition", partition, "partition must not be negative")
    if offset is not None and offset < 0:
        raise _fail("original_offset", offset, "offset must not be negative")


CHECKS: Mapping[str, Callable[[Record], None]] = {
    cat.INTELLIGENCE_REPORT: check_intelligence_report,
    cat.MISSING_EPISODE_EVENT: check_missing_episode,
    cat.HUB_DECISION: check_hub_decision,
    cat.ALERT: check_alert,
    cat.HEALTH_CSE_FLAG: check_health_cse_flag,
    cat.DEAD_LETTER: check_dead_letter,
}
