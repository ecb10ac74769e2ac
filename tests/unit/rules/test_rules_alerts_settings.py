import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.rules import (
    Alert,
    AreaSettings,
    HotspotSettings,
    RepeatMissingSettings,
    ReturnInterviewSettings,
    RuleInputError,
    alert_id,
    identity,
    new_alert,
)
from streams.rules.settings import AssociationSettings

T = datetime(2026, 1, 1, tzinfo=UTC)


def _alert(**changes: object) -> Alert:
    fields: dict[str, object] = dict(
        rule="repeat_missing", subject_kind="child", subject="child-1", anchor_ids=["e3"],
        area="north", severity="medium", window_start=T - timedelta(days=90), window_end=T,
        evidence=["m3", "m1", "m2", "m1"], raised_at=T, settings=(("days", 90), ("count", 3)),
    )
    fields.update(changes)
    return new_alert(**fields)  # type: ignore[arg-type]


def test_alert_id_is_first_32_hex_of_sha256_of_canonical_json() -> None:
    canonical = '{"anchors":["e1","e2"],"rule":"hotspot","settings":[["a",1],["b",2]],"subject":"cell"}'
    expected = hashlib.sha256(canonical.encode()).hexdigest()[:32]
    assert alert_id("hotspot", "cell", ["e2", "e1"], (("b", 2), ("a", 1))) == expected


def _reference_alert_id(rule: str, subject: str, anchors: list[str], settings: list[tuple[str, int]]) -> str:
    payload = {
        "anchors": sorted(set(anchors)),
        "rule": rule,
        "settings": [[name, value] for name, value in sorted(settings)],
        "subject": subject,
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


@given(
    st.text(), st.text(), st.lists(st.text(), max_size=4),
    st.lists(st.tuples(st.text(), st.integers()), max_size=4, unique_by=lambda pair: pair[0]),
)
def test_alert_id_is_the_documented_hash_for_any_text(
    rule: str, subject: str, anchors: list[str], settings: list[tuple[str, int]]
) -> None:
    # Ids already stored in case stores must never change: any text (quotes, escapes, non-ASCII)
    # gives the hash of json.dumps(sort_keys=True) of the documented payload.
    expected = _reference_alert_id(rule, subject, anchors, settings)
    assert alert_id(rule, subject, anchors, tuple(settings)) == expected


def test_alert_id_does_not_depend_on_anchor_or_settings_order() -> None:
    assert alert_id("r", "s", ["b", "a", "a"], (("y", 2), ("x", 1))) == alert_id(
        "r", "s", ["a", "b"], (("x", 1), ("y", 2))
    )


def test_changed_settings_give_a_different_alert_id() -> None:
    default = identity(RepeatMissingSettings())
    thirty = identity(RepeatMissingSettings(days=30))
    assert alert_id("repeat_missing", "c", ["e"], default) != alert_id("repeat_missing", "c", ["e"], thirty)


def test_alert_keeps_evidence_sorted_and_unique() -> None:
    assert _alert().evidence == ("m1", "m2", "m3")
    assert _alert().settings == (("count", 3), ("days", 90))


def test_alert_window_start_after_end_is_rejected() -> None:
    with pytest.raises(RuleInputError, match=r"Alert\.window_start .* is after window_end"):
        _alert(window_start=T + timedelta(seconds=1))


def test_alert_with_naive_raised_at_is_rejected() -> None:
    with pytest.raises(RuleInputError, match=r"Alert\.raised_at must be timezone-aware"):
        _alert(raised_at=datetime(2026, 1, 1))


def test_alert_round_trips_through_json() -> None:
    alert = _alert(handling_conditions=["no onward sharing"], resolves="abc")
    raw = json.loads(json.dumps(alert.to_json()))
    assert Alert.from_json(raw) == alert


def test_alert_from_json_names_the_bad_field() -> None:
    raw = _alert().to_json()
    raw["severity"] = "urgent"
    with pytest.raises(RuleInputError, match=r"alert\.severity: Invalid enum value 'urgent'"):
        Alert.from_json(raw)


def test_defaults_are_the_documented_ones() -> None:
    assert identity(RepeatMissingSettings()) == (("count", 3), ("days", 90))
    assert identity(ReturnInterviewSettings()) == (("hours", 72),)
    assert identity(AssociationSettings()) == (("days", 90), ("min_children", 3))
    assert dict(identity(HotspotSettings())) == {
        "resolution": 8, "report_resolution": 6, "neighbour_rings": 1, "days": 28,
        "min_reports": 5, "min_agencies": 2, "min_children": 2,
    }
    assert RepeatMissingSettings().allowed_lateness_days == 30


def test_allowed_lateness_is_not_part_of_alert_identity() -> None:
    assert identity(RepeatMissingSettings(allowed_lateness_days=1)) == identity(RepeatMissingSettings())


def test_for_area_returns_the_override_or_the_default() -> None:
    by_area = AreaSettings(RepeatMissingSettings(), {"south": RepeatMissingSettings(days=30)})
    assert by_area.for_area("south").days == 30
    assert by_area.for_area("north") == RepeatMissingSettings()


def test_from_changes_builds_three_in_thirty_for_one_area() -> None:
    by_area = AreaSettings.from_changes(RepeatMissingSettings(), {"south": {"days": 30}})
    assert by_area.for_area("south") == RepeatMissingSettings(count=3, days=30)


def test_from_changes_rejects_an_unknown_field_naming_the_area() -> None:
    message = r"area 'south' names unknown RepeatMissingSettings field\(s\) \['dayz'\]"
    with pytest.raises(RuleInputError, match=message):
        AreaSettings.from_changes(RepeatMissingSettings(), {"south": {"dayz": 30}})


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: RepeatMissingSettings(count=0), r"RepeatMissingSettings\.count must be at least 1, got 0"),
        (lambda: RepeatMissingSettings(days=True), r"\.days must be a whole number, got True"),
        (lambda: ReturnInterviewSettings(hours=0), r"Settings\.hours must be at least 1, got 0"),
        (lambda: HotspotSettings(resolution=16), r"HotspotSettings\.resolution must be at most 15, got 16"),
        (lambda: HotspotSettings(report_resolution=9), r"must not be finer than resolution 8, got 9"),
        (lambda: AssociationSettings(allowed_lateness_days=-1), r"lateness_days must be at least 0, got -1"),
    ],
)
def test_invalid_settings_name_the_field_and_value(build: object, message: str) -> None:
    with pytest.raises(RuleInputError, match=message):
        build()  # type: ignore[operator]
