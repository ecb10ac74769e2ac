"""Watermarks of re-keyed partitions, merged from the source partitions that feed them."""

from __future__ import annotations

from datetime import datetime


class MergedWatermark:
    """The event time a re-keyed partition has surely reached: the minimum over its sources.

    A re-keyed topic merges several source partitions that progress at different speeds (a
    replay reads intelligence far ahead of missing episodes, or the other way round). Taking
    the minimum over every source means nothing is pruned or refused as late just because
    another source ran ahead; until every source has been heard from there is no watermark and
    nothing is pruned. Sources are heard from through the events forwarded from them and through
    the marks the worker sends to every re-keyed partition (see ``streams.marks``): a source
    partition with no events at all, or silent with nothing left to read, is reported *idle* and
    left out of the minimum until its next event. An idle source found to have events again is
    *waiting*: until its next mark comes the watermark stays where it is, since those events may
    be far behind the other sources (a replay into a worker that has been idle). Kept in memory:
    after a restart it is rebuilt from new messages and marks, which only delays pruning.
    """

    def __init__(self, expected_sources: int) -> None:
        self.expected = expected_sources
        self.marks: dict[str, dict[str, datetime | None]] = {}
        self.waiting: dict[str, set[str]] = {}

    def observe(self, partition: str, source: str, mark: datetime) -> datetime | None:
        """Record ``source``'s watermark as seen on the re-keyed ``partition``; return the merged one.

        ``partition`` and ``source`` are ``topic:partition`` strings. A source's mark never goes
        back: an older mark from it (a message forwarded before a later one) is ignored.
        """
        marks = self.marks.setdefault(partition, {})
        held = marks.get(source)
        if held is None or mark > held:
            marks[source] = mark
        waiting = self.waiting.get(partition)
        if waiting:
            waiting.discard(source)
        return self._merged(partition)

    def idle(self, partition: str, source: str) -> datetime | None:
        """Record that ``source`` has no event to send (none at all, or none for a while with
        nothing left to read): it is left out of the minimum until its next mark. Return the
        merged watermark."""
        self.marks.setdefault(partition, {})[source] = None
        self.waiting.get(partition, set()).discard(source)
        return self._merged(partition)

    def wait_for(self, partition: str, source: str) -> None:
        """Record that ``source``, idle until now, has events on their way: hold the watermark
        (None: do not advance) until its next mark."""
        self.marks.setdefault(partition, {}).setdefault(source, None)
        self.waiting.setdefault(partition, set()).add(source)

    def forget(self, partition: str) -> None:
        """Drop what was heard on a re-keyed ``partition`` this worker no longer reads."""
        self.marks.pop(partition, None)
        self.waiting.pop(partition, None)

    def current(self, partition: str) -> datetime | None:
        return self._merged(partition)

    def _merged(self, partition: str) -> datetime | None:
        marks = self.marks.get(partition, {})
        if len(marks) < self.expected or self.waiting.get(partition):
            return None
        active = [m for m in marks.values() if m is not None]
        return min(active) if active else None
