"""Watermark marks sent by the worker to every re-keyed partition: idle, waiting and moving sources."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from streams import marks
from streams.app import ASSOCIATION_LINKS, HOTSPOT_OBSERVATIONS, MISSING, PARTITIONS, watermarks
from streams.engine import Assigned, Batch, Record
from streams.watermarks import MergedWatermark

T0 = datetime(2025, 1, 1, tzinfo=UTC)
PARTNER = next(name for name in watermarks if name.endswith("intelligence.partner"))


@pytest.fixture(autouse=True)
def fresh() -> Iterator[None]:
    marks._sent.clear()
    marks._moved.clear()
    yield
    marks._sent.clear()
    marks._moved.clear()
    for table in watermarks.values():
        table.partitions.clear()


def held(topic: str, *, empty: bool = True, caught_up: bool = True, unread: bool = False) -> Assigned:
    long_ago = time.monotonic() - 60
    return Assigned(topic, 0, long_ago, lambda: empty, lambda: caught_up, lambda: unread)


Sent = list[tuple[str, int | None, tuple[str, datetime | str | None]]]


def sent(batch: Batch) -> Sent:
    return [(topic, partition, marks.decode_mark(value)) for topic, _, value, _, partition in batch.outputs]


def everywhere(mark: datetime | str | None, topic: str = PARTNER) -> Sent:
    fed = [HOTSPOT_OBSERVATIONS, ASSOCIATION_LINKS] if topic == PARTNER else [HOTSPOT_OBSERVATIONS]
    return [(t, p, (f"{topic}:0", mark)) for t in fed for p in range(PARTITIONS)]


@pytest.mark.parametrize("mark", [T0, None, marks.WAITING])
def test_marks_read_back_as_written(mark: datetime | str | None) -> None:
    waiting = mark == marks.WAITING
    data = marks.encode_mark("topic:3", None if waiting else mark, waiting=waiting)
    assert marks.decode_mark(data) == ("topic:3", mark)


def test_an_empty_source_is_reported_idle_then_waiting_once_it_has_messages() -> None:
    partner = held(PARTNER)
    batch = Batch()
    marks.send_marks(batch, [partner])
    assert sent(batch) == everywhere(None)

    quiet = Batch()
    marks.report_waiting(quiet, [partner], set())
    assert quiet.outputs == []  # nothing to read: still idle

    coming = Batch()
    marks.report_waiting(coming, [partner], {(PARTNER, 0)})
    assert sent(coming) == everywhere(marks.WAITING)
    again = Batch()
    marks.report_waiting(again, [partner], {(PARTNER, 0)})
    assert again.outputs == []  # reported once


def test_a_source_with_messages_waiting_on_the_broker_is_reported_waiting() -> None:
    missing = held(MISSING)
    marks.send_marks(Batch(), [missing])
    batch = Batch()
    marks.report_waiting(batch, [held(MISSING, unread=True)], set())
    assert sent(batch) == everywhere(marks.WAITING, MISSING)


def test_a_waiting_source_sends_its_mark_once_it_has_one_or_goes_idle_with_none() -> None:
    partner = held(PARTNER)
    marks.send_marks(Batch(), [partner])
    marks.report_waiting(Batch(), [partner], {(PARTNER, 0)})

    reading = Batch()
    marks.send_marks(reading, [held(PARTNER, empty=False, caught_up=False)])
    assert reading.outputs == []  # its messages are being read; they carry their marks

    only_dead_letters = Batch()
    marks.send_marks(only_dead_letters, [held(PARTNER, empty=False, caught_up=True)])
    assert sent(only_dead_letters) == everywhere(None)  # read, and not one event: idle again

    marks.report_waiting(Batch(), [partner], {(PARTNER, 0)})
    watermarks[PARTNER].partitions[0] = {f"{PARTNER}:0": T0}
    moved = Batch()
    marks.send_marks(moved, [held(PARTNER, empty=False, caught_up=False)])
    assert sent(moved) == everywhere(T0)


def test_a_source_never_reported_idle_is_never_reported_waiting() -> None:
    watermarks[PARTNER].partitions[0] = {f"{PARTNER}:0": T0}
    moving = held(PARTNER, empty=False, caught_up=False)
    marks.send_marks(Batch(), [moving])
    batch = Batch()
    marks.report_waiting(batch, [held(PARTNER, empty=False, unread=True)], {(PARTNER, 0)})
    assert batch.outputs == []


def test_a_waiting_mark_holds_a_re_keyed_partitions_watermark() -> None:
    merged = MergedWatermark(2)
    cells = f"{HOTSPOT_OBSERVATIONS}:0"
    merged.observe(cells, "a:0", T0)
    merged.observe(cells, "b:0", T0)

    def mark(data: bytes) -> None:
        record = Record(HOTSPOT_OBSERVATIONS, 0, 0, marks.MARK_KEY, data, 0)
        assert marks.take_mark(record, Batch(), merged)

    mark(marks.encode_mark("b:0", None))
    mark(marks.encode_mark("b:0", None, waiting=True))
    assert merged.observe(cells, "a:0", T0.replace(year=2026)) is None
