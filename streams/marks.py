"""Watermark marks: every source partition's progress, told to every re-keyed partition.

Events forwarded to a re-keyed topic carry the watermark of the source partition they came
from, but a re-keyed partition hears from a source only when that source has an event for it.
A source partition with no events at all would never be heard from, and the merged watermark
(the minimum over all sources) would never exist, so state would never be pruned. So every
``EVERY_S`` the worker sends, for each source partition it reads, a mark to every partition of
the re-keyed topics it feeds: the source's watermark, or *idle* when the partition has had no
event at all for ``IDLE_AFTER_S`` since it was assigned, or when it had events but has been
silent for ``SILENT_AFTER_S`` with nothing left to read (a quiet partition of partner
intelligence must not hold every hotspot's pruning back for days). An idle source is left out
of the merged watermark until its next event. A mark from a source follows every event
forwarded from it up to that watermark (one producer, in order), so it never lets a re-keyed
partition run ahead of events still on their way.

An idle source can have events again at any moment, and in a replay into a worker that has been
idle they may be weeks of event time behind what the other sources are sending. So before each
batch is handled, a source reported idle that has messages in the batch or waiting on the
broker is reported *waiting*, ahead of anything the batch forwards: re-keyed partitions hold
their watermark until its next mark, rather than prune and refuse as late what it is about to
send. Its events carry that mark; the next tick tells every partition (or reports it idle
again, once it has nothing left to read and still no event of its own).
"""

from __future__ import annotations

import json
import time
from datetime import datetime

from hubstream import topics as catalogue
from streams.app import (
    ASSOCIATION_LINKS,
    HOTSPOT_OBSERVATIONS,
    INTELLIGENCE,
    PARTITIONS,
    dead_letter,
    enabled,
    forgets_revoked,
    watermarks,
)
from streams.engine import Assigned, Batch, Record
from streams.watermarks import MergedWatermark

MARK_KEY = b"\x00mark"  # never a cell or a pseudonym, so never a state key
EVERY_S = 5.0
IDLE_AFTER_S = 5.0
SILENT_AFTER_S = 30.0
RESEND_S = 60.0  # also unchanged marks, for a re-keyed partition whose worker restarted

WAITING = "waiting"  # what was last sent for a source: its mark, None (idle) or WAITING
_sent: dict[str, tuple[datetime | str | None, float]] = {}
_moved: dict[str, tuple[datetime | None, float]] = {}  # a source's last watermark, and since when


@forgets_revoked
def _forget_sources(gone: list[tuple[str, int]]) -> None:
    for topic, partition in gone:
        _sent.pop(f"{topic}:{partition}", None)
        _moved.pop(f"{topic}:{partition}", None)


def send_marks(batch: Batch, assigned: list[Assigned]) -> None:
    now = time.monotonic()
    for held in assigned:
        table = watermarks.get(held.topic)
        if table is None:
            continue  # not a source of re-keyed topics
        source = f"{held.topic}:{held.partition}"
        mark: datetime | None = table.partitions.get(held.partition, {}).get(source)
        if mark is None and (now - held.since < IDLE_AFTER_S or not (held.empty() or held.caught_up())):
            continue  # events are on their way; they carry their own marks
        if mark is not None and _silent(source, mark, now) and held.caught_up():
            mark = None  # idle until its next event, which carries its own mark
        last = _sent.get(source)
        if last is not None and last[0] == mark and now - last[1] < RESEND_S:
            continue
        _send_everywhere(batch, held.topic, encode_mark(source, mark))
        _sent[source] = (mark, now)


def report_waiting(batch: Batch, assigned: list[Assigned], in_batch: set[tuple[str, int]]) -> None:
    """Report as waiting every source reported idle that has messages in the coming batch
    (``in_batch``: topic and partition) or unread on the broker."""
    for held in assigned:
        source = f"{held.topic}:{held.partition}"
        last = _sent.get(source)
        if last is None or last[0] is not None:
            continue  # not reported idle
        if (held.topic, held.partition) in in_batch or held.unread():
            _send_everywhere(batch, held.topic, encode_mark(source, None, waiting=True))
            _sent[source] = (WAITING, time.monotonic())


def _send_everywhere(batch: Batch, source_topic: str, data: bytes) -> None:
    """To every partition of the re-keyed topics that ``source_topic`` feeds."""
    fed = [HOTSPOT_OBSERVATIONS] if "hotspot" in enabled else []
    if source_topic in INTELLIGENCE and "association" in enabled:
        fed.append(ASSOCIATION_LINKS)
    for topic in fed:
        for partition in range(PARTITIONS):
            batch.send(topic, MARK_KEY, data, partition=partition)


def _silent(source: str, mark: datetime, now: float) -> bool:
    last = _moved.get(source)
    if last is None or last[0] != mark:
        _moved[source] = (mark, now)
        return False
    return now - last[1] >= SILENT_AFTER_S


def take_mark(record: Record, batch: Batch, merged: MergedWatermark) -> bool:
    """If ``record`` is a mark, fold it into ``merged`` (or dead-letter it) and say so."""
    if record.key != MARK_KEY:
        return False
    try:
        source, mark = decode_mark(record.value)
    except (ValueError, KeyError, TypeError) as exc:
        dead_letter(record, batch, f"unreadable watermark mark: {exc}", None, "process")
        return True
    if isinstance(mark, datetime):
        merged.observe(record.source, source, mark)
    elif mark is None:
        merged.idle(record.source, source)
    else:
        merged.wait_for(record.source, source)
    return True


def encode_mark(source: str, mark: datetime | None, *, waiting: bool = False) -> bytes:
    """A source's watermark; None: idle; ``waiting``: idle until now, with events on their way."""
    raw: dict[str, object] = {"source": source, "watermark": mark.isoformat() if mark else None}
    if waiting:
        raw["waiting"] = True  # read as idle by a worker from before waiting marks
    return json.dumps(raw).encode()


def decode_mark(data: bytes) -> tuple[str, datetime | str | None]:
    """(source, its watermark, None when idle, or WAITING)."""
    raw = json.loads(data)
    mark = raw["watermark"]
    if raw.get("waiting") is True:
        return str(raw["source"]), WAITING
    return str(raw["source"]), datetime.fromisoformat(mark) if mark else None


# Sources whose marks each re-keyed topic waits for.
_INTELLIGENCE = (catalogue.POLICE_INTELLIGENCE, catalogue.PARTNER_INTELLIGENCE)
HOTSPOT_SOURCES = sum(t.partitions for t in (catalogue.MISSING_EPISODES, *_INTELLIGENCE))
ASSOCIATION_SOURCES = sum(t.partitions for t in _INTELLIGENCE)
