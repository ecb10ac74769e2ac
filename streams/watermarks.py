"""Watermarks of re-keyed partitions, merged from the source partitions that feed them."""

from __future__ import annotations

from datetime import datetime


class MergedWatermark:
    """The event time a re-keyed partition has surely reached: the minimum over its sources.

    A re-keyed topic merges several source partitions that progress at different speeds (a
    replay reads intelligence far ahead of missing episodes, or the other way round). Taking
    the minimum over every source means nothing is pruned or refused as late just because
    another source ran ahead; until every source has been heard from there is no watermark and
    nothing is pruned. Kept in memory: after a restart it is rebuilt from new messages, which
    only delays pruning.
    """

    def __init__(self, expected_sources: int) -> None:
        self.expected = expected_sources
        self.marks: dict[str, dict[str, datetime]] = {}

    def observe(self, partition: str, source: str, mark: datetime) -> datetime | None:
        """Record ``source``'s watermark as seen on the re-keyed ``partition``; return the merged one.

        ``partition`` and ``source`` are ``topic:partition`` strings. A source's mark never goes
        back: an older mark from it (a message forwarded before a later one) is ignored.
        """
        marks = self.marks.setdefault(partition, {})
        if source not in marks or mark > marks[source]:
            marks[source] = mark
        return min(marks.values()) if len(marks) >= self.expected else None
