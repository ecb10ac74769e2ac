"""Choosing the rules a worker runs: what it reads, what state it keeps, and what it refuses."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from streams import app
from streams.engine import Table
from streams.worker import choose_rules, running


@pytest.fixture(autouse=True)
def every_rule_again() -> Iterator[None]:
    yield
    app.select_rules(list(app.RULES))


def test_every_rule_by_default_reads_every_input_and_keeps_every_table() -> None:
    handlers, tables = running()
    assert set(handlers) == {app.MISSING, *app.INTELLIGENCE, app.DECISIONS, app.HOTSPOT_OBSERVATIONS,
                             app.ASSOCIATION_LINKS}
    assert tables == app.TABLES


def only(monkeypatch: pytest.MonkeyPatch, rule: str) -> tuple[dict[str, object], list[Table]]:
    """What a worker of its own group running ``rule`` alone reads and keeps."""
    monkeypatch.setenv("HUBSTREAM_WORKER_ID", "hubstream-worker-replay")
    choose_rules([rule])
    handlers, tables = running()
    return dict(handlers), tables


def test_repeat_missing_alone_reads_the_missing_topic_and_keeps_its_own_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handlers, tables = only(monkeypatch, "repeat_missing")
    assert set(handlers) == {app.MISSING}
    assert sorted(t.name for t in tables) == ["repeat-missing", "watermarks-hubstream.missing-episodes"]


def test_hotspot_alone_reads_its_sources_and_re_keyed_topic_but_not_associations(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handlers, tables = only(monkeypatch, "hotspot")
    assert set(handlers) == {app.MISSING, *app.INTELLIGENCE, app.HOTSPOT_OBSERVATIONS}
    assert "hotspot" in {t.name for t in tables}
    assert not {"repeat-missing", "return-interview", "association", "health-flag"} & {t.name for t in tables}


def test_an_unknown_rule_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"rules must be some of .* got repeat_missing, hotspots"):
        app.select_rules(["repeat_missing", "hotspots"])


def test_some_rules_in_the_full_workers_group_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # Its group would take events the full worker then never sees.
    monkeypatch.delenv("HUBSTREAM_WORKER_ID", raising=False)
    with pytest.raises(ValueError, match="needs a group of its own: set HUBSTREAM_WORKER_ID"):
        choose_rules(["repeat_missing"])
