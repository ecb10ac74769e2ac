"""Merged watermarks of re-keyed partitions: the minimum over every source partition feeding them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from streams.watermarks import MergedWatermark

T0 = datetime(2024, 3, 1, tzinfo=UTC)
CELL = "hubstream-worker-hotspot-observations:0"


def hours(n: int) -> datetime:
    return T0 + timedelta(hours=n)


def test_there_is_no_watermark_until_every_source_has_been_seen() -> None:
    merged = MergedWatermark(3)
    assert merged.observe(CELL, "missing:0", hours(5)) is None
    assert merged.observe(CELL, "police:0", hours(6)) is None
    assert merged.observe(CELL, "missing:0", hours(7)) is None  # a source seen twice is still one
    assert merged.observe(CELL, "partner:0", hours(9)) == hours(6)


def test_the_watermark_is_the_minimum_over_sources() -> None:
    merged = MergedWatermark(2)
    merged.observe(CELL, "a", hours(100))
    assert merged.observe(CELL, "b", hours(3)) == hours(3)
    assert merged.observe(CELL, "b", hours(50)) == hours(50)
    assert merged.observe(CELL, "b", hours(200)) == hours(100)


def test_a_sources_mark_never_goes_backwards() -> None:
    merged = MergedWatermark(2)
    merged.observe(CELL, "a", hours(10))
    merged.observe(CELL, "b", hours(20))
    # An older message forwarded from "a" after a newer one does not pull the watermark back.
    assert merged.observe(CELL, "a", hours(1)) == hours(10)
    assert merged.marks[CELL]["a"] == hours(10)


def test_each_re_keyed_partition_has_its_own_watermark() -> None:
    merged = MergedWatermark(1)
    assert merged.observe("cells:0", "a", hours(10)) == hours(10)
    assert merged.observe("cells:1", "a", hours(2)) == hours(2)
    assert merged.observe("cells:0", "a", hours(11)) == hours(11)


_observations = st.lists(
    st.tuples(st.sampled_from(["s0", "s1", "s2"]), st.integers(0, 1000).map(hours)), max_size=40
)


@given(_observations)
def test_the_watermark_is_the_least_latest_mark_and_never_falls(observations) -> None:
    merged = MergedWatermark(3)
    latest: dict[str, datetime] = {}
    previous: datetime | None = None
    for source, mark in observations:
        latest[source] = max(mark, latest.get(source, mark))
        got = merged.observe(CELL, source, mark)
        assert got == (min(latest.values()) if len(latest) == 3 else None)
        if previous is not None:
            assert got is not None and got >= previous
        previous = got


def test_an_idle_source_counts_as_heard_but_holds_nothing_back() -> None:
    merged = MergedWatermark(3)
    merged.observe(CELL, "missing:0", hours(5))
    assert merged.idle(CELL, "police:0") is None  # partner:0 not heard from yet
    assert merged.observe(CELL, "partner:0", hours(9)) == hours(5)
    assert merged.observe(CELL, "missing:0", hours(20)) == hours(9)


def test_an_idle_source_with_a_first_event_takes_part_again() -> None:
    merged = MergedWatermark(2)
    merged.idle(CELL, "a")
    assert merged.observe(CELL, "b", hours(50)) == hours(50)
    assert merged.observe(CELL, "a", hours(40)) == hours(40)


def test_a_source_gone_quiet_is_left_out_until_its_next_event() -> None:
    merged = MergedWatermark(2)
    merged.observe(CELL, "a", hours(10))
    merged.observe(CELL, "b", hours(20))
    assert merged.idle(CELL, "a") == hours(20)  # a quiet partition holds nothing back
    # Its next event takes part again; the merged watermark may fall back to it (the rules keep
    # the latest they have seen, so their own watermark never does).
    assert merged.observe(CELL, "a", hours(15)) == hours(15)


def test_every_source_idle_is_no_watermark() -> None:
    merged = MergedWatermark(2)
    merged.idle(CELL, "a")
    assert merged.idle(CELL, "b") is None
    assert merged.current(CELL) is None


def test_an_idle_source_with_events_on_their_way_holds_the_watermark_until_its_next_mark() -> None:
    merged = MergedWatermark(2)
    merged.observe(CELL, "a", hours(10))
    merged.idle(CELL, "b")
    merged.wait_for(CELL, "b")
    # "a" runs ahead, but "b"'s events may be far behind it: no watermark to advance to.
    assert merged.observe(CELL, "a", hours(900)) is None
    assert merged.observe(CELL, "b", hours(12)) == hours(12)
    assert merged.observe(CELL, "a", hours(901)) == hours(12)


def test_a_waiting_source_found_idle_again_holds_nothing_back() -> None:
    merged = MergedWatermark(2)
    merged.observe(CELL, "a", hours(10))
    merged.wait_for(CELL, "b")  # never heard from before: it counts as heard, and holds
    assert merged.current(CELL) is None
    assert merged.idle(CELL, "b") == hours(10)


def test_waiting_is_per_re_keyed_partition() -> None:
    merged = MergedWatermark(1)
    merged.observe("cells:0", "a", hours(1))
    merged.observe("cells:1", "a", hours(1))
    merged.idle("cells:0", "a")
    merged.wait_for("cells:0", "a")
    assert merged.current("cells:0") is None
    assert merged.current("cells:1") == hours(1)


_steps = st.lists(
    st.tuples(
        st.sampled_from(["observe", "idle", "wait_for"]),
        st.sampled_from(["s0", "s1", "s2"]),
        st.integers(0, 1000).map(hours),
    ),
    max_size=40,
)


@given(_steps)
def test_waiting_holds_idle_is_left_out_and_the_rest_is_the_minimum(steps) -> None:
    merged = MergedWatermark(3)
    latest: dict[str, datetime | None] = {}
    waiting: set[str] = set()
    for step, source, mark in steps:
        if step == "observe":
            held = latest.get(source)
            latest[source] = mark if held is None else max(held, mark)
            waiting.discard(source)
            merged.observe(CELL, source, mark)
        elif step == "idle":
            latest[source] = None
            waiting.discard(source)
            merged.idle(CELL, source)
        else:
            latest.setdefault(source, None)
            waiting.add(source)
            merged.wait_for(CELL, source)
        active = [m for m in latest.values() if m is not None]
        expected = None if len(latest) < 3 or waiting or not active else min(active)
        assert merged.current(CELL) == expected
