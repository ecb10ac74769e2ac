"""What handlers keep per partition outside their tables is forgotten when the partition goes,
so a partition given back later starts from its changelog, not from a stale cache."""

from __future__ import annotations

from datetime import UTC, datetime

from streams import app, marks
from streams.association import handlers as association
from streams.engine import Table
from streams.hotspot import handlers as hotspot
from streams.missing import handlers as missing

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def test_revoking_a_partition_forgets_every_cache_of_it_and_keeps_the_others() -> None:
    source, kept = f"{app.MISSING}:2", f"{app.MISSING}:3"
    for name in (source, kept):
        marks._sent[name] = (T0, 0.0)
        marks._moved[name] = (T0, 0.0)
        app._persisted[name] = T0
    missing.due.partitions[2] = {}
    missing.due.partitions[3] = {}
    missing._queue(2)
    missing._queue(3)
    hot, linked = f"{app.HOTSPOT_OBSERVATIONS}:4", f"{app.ASSOCIATION_LINKS}:4"
    hotspot.merged.observe(hot, source, T0)
    association.merged.observe(linked, source, T0)
    try:
        app.forget_revoked([(app.MISSING, 2), (app.HOTSPOT_OBSERVATIONS, 4), (app.ASSOCIATION_LINKS, 4)])

        assert source not in marks._sent and source not in marks._moved and source not in app._persisted
        assert kept in marks._sent and kept in marks._moved and kept in app._persisted
        assert 2 not in missing._queues and 3 in missing._queues
        assert hotspot.merged.current(hot) is None and hot not in hotspot.merged.marks
        assert linked not in association.merged.marks
    finally:
        for cache in (marks._sent, marks._moved, app._persisted):
            cache.clear()
        missing._queues.clear()
        missing.due.partitions.clear()
        hotspot.merged.forget(hot)
        association.merged.forget(linked)


def test_a_dropped_partition_writes_nothing_to_its_changelog() -> None:
    """A key changed in a partition then taken away must not be written as a tombstone: the next
    owner's state would be deleted."""
    table = Table("t", "topic", lambda v: b"v", lambda b: b)
    table.partitions[0] = {}
    table.partitions[1] = {}
    table.set(0, "a", 1)
    table.set(1, "b", 2)
    table.drop(0)
    assert table.changelog_messages() == [(b"b", b"v", 1)]


def test_undoing_a_journal_restores_values_and_absences() -> None:
    table = Table("t", "topic", lambda v: b"v", lambda b: b)
    table.partitions[0] = {"a": 1}
    table.journal = journal = []
    table.set(0, "a", 2)
    table.set(0, "b", 3)
    table.set(0, "a", None)
    for t, partition, key, before in reversed(journal):
        t.undo(partition, key, before)
    assert table.partitions[0] == {"a": 1}
