"""Worker tables: what each checkpoint writes to a changelog, and reading it back."""

from __future__ import annotations

from datetime import timedelta
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.engine import ChangelogMessage, Parts, Table
from streams.rules import HotspotSettings, Location, hotspot
from streams.rules._json import dumps, loads
from tests.unit.rules.rules_factories import day, report

SETTINGS = HotspotSettings()
HOTEL = Location(52.7721, -1.2062)
CELL = hotspot.keys_for(HOTEL, SETTINGS)[0]


def parted() -> Table:
    table = Table("hotspot", "observations", dumps, partial(loads, hotspot.HotspotState),
                  Parts(hotspot.parts, hotspot.from_parts))
    table.changelog = "app-hotspot-changelog"
    table.restore(0, ())
    return table


def sighting(n: int, hours: int, agency: str = "police") -> object:
    return report(f"r{n}", day(0) + timedelta(hours=hours), locations=[HOTEL], agency=agency,
                  children=[f"c{n % 3}"])


def read_back(messages: list[ChangelogMessage], compact: bool) -> dict[str, object]:
    """A new table's state after reading ``messages`` back; ``compact``: only the last message
    of each key survives, as after log compaction (tombstones included)."""
    if compact:
        messages = list({key: (key, value, p) for key, value, p in messages}.values())
    table = parted()
    table.restore(0, [(key.decode(), value) for key, value, _ in messages])
    return table.partitions[0]


def test_a_checkpoint_writes_the_parts_that_changed_and_only_those() -> None:
    table = parted()
    state = hotspot.initial(CELL)
    for n, hours in enumerate((0, 1, 30)):  # two on the first day, one on the second
        state, _ = hotspot.apply(state, sighting(n, hours), SETTINGS)
    table.set(0, CELL, state)
    first = table.changelog_messages()
    assert sorted(key for key, _, _ in first) == [f"{CELL}/{name}".encode()
                                                  for name in ("2026-01-01", "2026-01-02", "head")]
    state, _ = hotspot.apply(state, sighting(3, 31), SETTINGS)
    table.set(0, CELL, state)
    assert sorted(key for key, _, _ in table.changelog_messages()) == [
        f"{CELL}/2026-01-02".encode(), f"{CELL}/head".encode()]
    assert table.changelog_messages() == []  # nothing changed since


def test_parts_no_longer_held_are_deleted_from_the_changelog() -> None:
    table = parted()
    state = hotspot.initial(CELL)
    for n, hours in enumerate((0, 30)):
        state, _ = hotspot.apply(state, sighting(n, hours), SETTINGS)
    table.set(0, CELL, state)
    table.changelog_messages()
    pruned, _ = hotspot.advance(state, day(1) + timedelta(days=58, hours=1), SETTINGS)  # drops day 0
    table.set(0, CELL, pruned)
    assert {(key, value is None) for key, value, _ in table.changelog_messages()} == {
        (f"{CELL}/2026-01-01".encode(), True), (f"{CELL}/head".encode(), False)}
    table.set(0, CELL, None)
    assert {(key, value) for key, value, _ in table.changelog_messages()} == {
        (f"{CELL}/2026-01-02".encode(), None), (f"{CELL}/head".encode(), None)}


def test_a_whole_value_where_parts_are_expected_is_refused_naming_the_key() -> None:
    with pytest.raises(ValueError, match=rf"app-hotspot-changelog\[1\]: key '{CELL}' is not <key>/<part>"):
        parted().restore(1, [(CELL, b"{}")])


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(st.tuples(st.integers(0, 24 * 10), st.sampled_from(["police", "school"]),
                             st.booleans(), st.booleans()), min_size=1, max_size=25),
    compact=st.booleans(),
)
def test_the_changelog_read_back_is_the_state_held(steps, compact) -> None:
    """Whatever happened to a cell (events, pruning, deletion, checkpoints between any of them),
    reading its changelog back, compacted or not, gives the state the worker held."""
    table = parted()
    state = hotspot.initial(CELL)
    messages: list[ChangelogMessage] = []
    hours = 0
    for n, (later, agency, prune, checkpoint) in enumerate(steps):
        hours += later
        state, _ = hotspot.apply(state, sighting(n, hours, agency), SETTINGS)
        if prune:  # as far as lateness allows: days older than 28 go
            state, _ = hotspot.advance(state, day(0) + timedelta(days=30, hours=hours), SETTINGS)
        table.set(0, CELL, state if state.days else None)
        if checkpoint:
            messages += table.changelog_messages()
    messages += table.changelog_messages()
    assert read_back(messages, compact) == table.partitions[0]


def test_a_table_without_parts_writes_one_message_per_key() -> None:
    table = Table("counts", "source", lambda v: str(v).encode(), lambda b: int(b))
    table.restore(0, ())
    table.set(0, "a", 1)
    table.set(0, "b", 2)
    table.set(0, "b", None)
    assert sorted(table.changelog_messages()) == [(b"a", b"1", 0), (b"b", None, 0)]
    again = Table("counts", "source", lambda v: str(v).encode(), lambda b: int(b))
    assert again.restore(0, [("a", b"1"), ("b", b"2"), ("b", None)]) == 1
    assert again.partitions[0] == {"a": 1}
