"""The decision form: every problem names its field; nothing is published with one."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from web.forms import DECISION_KINDS, decision, safe_next


def test_a_good_decision_is_read_with_spaces_taken_out_of_the_nhs_number() -> None:
    d, problems = decision(
        {"kind": "risk_level_set", "risk": "high", "nhs_number": "943 476 5919", "reason": " "}
    )
    assert not problems
    assert d is not None and (d.kind, d.risk, d.reason, d.nhs_number) == (
        "risk_level_set",
        "high",
        None,
        "9434765919",
    )


@pytest.mark.parametrize(
    ("form", "field", "message"),
    [
        ({}, "kind", "Select what was decided"),
        ({"kind": "case_deleted"}, "kind", "Select what was decided"),
        ({"kind": "risk_level_set"}, "risk", "Select the risk level"),
        ({"kind": "case_opened", "risk": "extreme"}, "risk", "low, medium or high"),
        ({"kind": "case_closed"}, "reason", "Enter why the case is closed"),
        ({"kind": "case_closed", "reason": "x" * 2001}, "reason", "2000 characters or fewer (it is 2001)"),
        ({"kind": "case_opened", "nhs_number": "943 476 5918"}, "nhs_number", "modulus-11"),
        ({"kind": "case_opened", "nhs_number": "94347"}, "nhs_number", "exactly 10 digits"),
    ],
)
def test_each_problem_names_its_field(form: dict[str, str], field: str, message: str) -> None:
    d, problems = decision(form)
    assert d is None
    assert message in problems.by_field[field]
    assert {"text": problems.by_field[field], "href": f"#{field}"} in problems.summary()


def test_several_problems_are_all_reported_in_the_form_s_order() -> None:
    _, problems = decision({"kind": "case_closed", "risk": "huge", "nhs_number": "1"})
    assert list(problems.by_field) == ["risk", "reason", "nhs_number"]


@given(
    st.dictionaries(st.sampled_from(["kind", "risk", "reason", "nhs_number", "other"]), st.text(max_size=30))
)
def test_any_form_gives_a_decision_or_problems_never_both_never_an_exception(form: dict[str, str]) -> None:
    d, problems = decision(form)
    assert (d is None) == bool(problems)
    if d is not None:
        assert d.kind in DECISION_KINDS


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/concerns/abc?x=1", "/concerns/abc?x=1"),
        (None, "/concerns"),
        ("", "/concerns"),
        ("https://evil.example/", "/concerns"),
        ("//evil.example/", "/concerns"),
        ("/\\evil.example", "/concerns"),
    ],
)
def test_after_signing_in_only_a_path_of_this_site(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected
