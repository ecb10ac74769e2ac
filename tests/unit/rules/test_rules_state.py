"""``evolve`` copies rule state as ``dataclasses.replace`` would, and refuses what it cannot copy."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.rules import repeat_missing
from streams.rules._state import evolve
from streams.rules.alerts import new_alert

T = datetime(2026, 1, 1, tzinfo=UTC)


@given(st.text(), st.lists(st.tuples(st.text(), st.text()), max_size=3).map(tuple), st.none() | st.just(T))
def test_evolve_gives_what_replace_gives_and_leaves_the_original(
    child: str, fired: tuple[tuple[str, str], ...], watermark: datetime | None
) -> None:
    state = repeat_missing.initial("c")
    changed = evolve(state, child_id=child, fired=fired, watermark=watermark)
    assert changed == replace(state, child_id=child, fired=fired, watermark=watermark)
    assert state == repeat_missing.initial("c")
    assert hash(changed) == hash(replace(state, child_id=child, fired=fired, watermark=watermark))


def test_evolve_refuses_a_field_the_state_does_not_have() -> None:
    with pytest.raises(TypeError, match=r"RepeatMissingState has no field\(s\) \['reprots'\]"):
        evolve(repeat_missing.initial("c"), reprots=())


def test_evolve_refuses_a_class_that_validates_itself() -> None:
    alert = new_alert(
        rule="repeat_missing", subject_kind="child", subject="c", anchor_ids=["e"], area="north",
        severity="medium", window_start=T, window_end=T, evidence=["e"], raised_at=T, settings=(),
    )
    with pytest.raises(TypeError, match="Alert validates itself"):
        evolve(alert, severity="high")
