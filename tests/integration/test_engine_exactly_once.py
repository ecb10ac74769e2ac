"""The engine's failure paths against the real broker: nothing of a failed transaction is kept,
a poisoned record is dead-lettered with its state changes undone, and no output is lost or sent
twice (read committed)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from hubstream.kafka import librdkafka_config
from streams.engine import CHANGELOG_MAX_BYTES, Batch, Engine, Record, Table
from tests.support.stack import Namespace

EVENTS = 40


class Pipeline:
    """A source topic of numbered events, an output per event not seen before (as the rules
    ignore an event they have seen), and a table of the events each key has seen."""

    def __init__(self, ns: Namespace, name: str, *, transactional_source: bool = False) -> None:
        self.config = librdkafka_config(ns.settings, "admin")
        self.group = f"{ns.prefix}{name}"
        self.source, self.output, self.dead = (f"{self.group}-{t}" for t in ("in", "out", "dead"))
        self.table = Table("seen", self.source, lambda v: json.dumps(v).encode(), json.loads)
        admin = AdminClient(self.config)
        topics = [NewTopic(t, 2, 1) for t in (self.source, self.output, self.dead)]
        topics.append(NewTopic(f"{self.group}-seen-changelog", 2, 1, config={"cleanup.policy": "compact"}))
        for future in admin.create_topics(topics).values():
            future.result(30)
        if transactional_source:  # as the worker writes its re-keyed topics: markers between
            producer = Producer({**self.config, "transactional.id": f"{self.group}-source"})
            producer.init_transactions(30)
        else:
            producer = Producer(self.config)
        for n in range(EVENTS):
            if transactional_source and n % 10 == 0:
                producer.begin_transaction()
            producer.produce(self.source, str(n).encode(), f"k{n % 4}".encode(), partition=n % 2)
            if transactional_source and n % 10 == 9:
                producer.commit_transaction(30)
        assert producer.flush(30) == 0

    def handler(self, fail: Callable[[Record], None]) -> Callable[[Record, Batch], None]:
        def handle(record: Record, batch: Batch) -> None:
            key = record.key.decode() if record.key else ""
            seen = self.table.get(record.partition, key) or []
            if record.value.decode() in seen:
                return
            self.table.set(record.partition, key, [*seen, record.value.decode()])
            batch.send(self.output, record.key, record.value)
            fail(record)

        return handle

    def engine(self, fail: Callable[[Record], None] = lambda r: None, **kwargs: Any) -> Engine:
        return Engine(
            self.group, {self.source: self.handler(fail)}, [self.table], self.config, self.config,
            **{"commit_every_s": 0.2, **kwargs},
        )

    def run_until_outputs(self, engine: Engine, count: int, timeout_s: float = 60) -> None:
        """Run ``engine`` until ``count`` outputs are committed, then stop it."""
        thread = threading.Thread(target=engine.run, kwargs={"install_signal_handlers": False})
        thread.start()
        deadline = time.monotonic() + timeout_s
        try:
            while len(self.committed(self.output)) < count and time.monotonic() < deadline:
                time.sleep(0.5)
        finally:
            engine.stop()
            thread.join(60)

    def source_offsets(self) -> dict[int, int]:
        """The group's committed offset on each source partition."""
        reader = Consumer({**self.config, "group.id": self.group})
        try:
            source = [TopicPartition(self.source, p) for p in range(2)]
            return {tp.partition: tp.offset for tp in reader.committed(source, timeout=10)}
        finally:
            reader.close()

    def committed(self, topic: str) -> list[tuple[bytes | None, bytes | None]]:
        reader = Consumer({**self.config, "group.id": f"{self.group}-reader-{time.monotonic_ns()}",
                           "isolation.level": "read_committed", "enable.partition.eof": True,
                           "auto.offset.reset": "earliest"})
        reader.assign([TopicPartition(topic, p, 0) for p in range(2)])
        found, ends = [], 0
        deadline = time.monotonic() + 20
        try:
            while ends < 2 and time.monotonic() < deadline:
                for m in reader.consume(500, 0.5):
                    if m.error() is not None:
                        ends += 1
                    else:
                        found.append((m.key(), m.value()))
        finally:
            reader.close()
        return found


def test_an_exception_mid_batch_keeps_nothing_of_the_batch_and_a_restart_loses_no_output(
    ns: Namespace,
) -> None:
    pipeline = Pipeline(ns, "engine-crash")

    def crash_at_20(record: Record) -> None:
        if record.value == b"20":
            raise OSError("the disk went away")  # not the record's fault: the engine stops

    with pytest.raises(OSError, match="the disk went away"):
        pipeline.engine(crash_at_20, max_batch=EVENTS).run(install_signal_handlers=False)
    pipeline.run_until_outputs(pipeline.engine(), EVENTS)

    outputs = sorted(int(v) for _, v in pipeline.committed(pipeline.output) if v)
    assert outputs == list(range(EVENTS))  # none lost, none twice


def test_a_poisoned_record_is_dead_lettered_and_leaves_the_state_as_before(ns: Namespace) -> None:
    pipeline = Pipeline(ns, "engine-poison")

    def poison_7(record: Record) -> None:
        if record.value == b"7":
            raise ValueError("year 10000 is out of range")

    def dead_letter(record: Record, batch: Batch, exc: Exception) -> None:
        batch.send(pipeline.dead, record.key, f"{record.value.decode()}: {exc}".encode())

    engine = pipeline.engine(poison_7, on_poison=dead_letter)
    pipeline.run_until_outputs(engine, EVENTS - 1)

    outputs = sorted(int(v) for _, v in pipeline.committed(pipeline.output) if v)
    assert outputs == [n for n in range(EVENTS) if n != 7]
    assert [v for _, v in pipeline.committed(pipeline.dead)] == [b"7: year 10000 is out of range"]
    changelog = {k: json.loads(v) for k, v in pipeline.committed(f"{pipeline.group}-seen-changelog") if v}
    seen = sorted(int(n) for events in changelog.values() for n in events)
    assert seen == [n for n in range(EVENTS) if n != 7]  # the poisoned record's change was undone
    assert engine.poisoned == 1


def test_messages_of_a_partition_taken_away_are_left_for_its_next_owner(ns: Namespace) -> None:
    """A batch fetched just before a revoke still holds messages of the revoked partition; its
    state is gone (the next owner has it), so they are skipped, not handled (a KeyError once)."""
    pipeline = Pipeline(ns, "engine-revoked")
    fetcher = Consumer(
        {**pipeline.config, "group.id": f"{pipeline.group}-fetch", "enable.partition.eof": True}
    )
    fetcher.assign([TopicPartition(pipeline.source, p, 0) for p in range(2)])
    messages, ends = [], 0
    while ends < 2:
        for m in fetcher.consume(100, 5):
            if m.error() is None:
                messages.append(m)
            else:
                ends += 1
    fetcher.close()
    assert {m.partition() for m in messages} == {0, 1}

    engine = pipeline.engine()
    engine.producer.init_transactions(30)
    engine.producer.begin_transaction()
    held = TopicPartition(pipeline.source, 0)
    engine._assigned(engine.consumer, [held])  # partition 1 is another worker's now
    engine._handle(messages)
    engine._commit()

    handled = sorted(int(v) for _, v in pipeline.committed(pipeline.output) if v)
    assert handled == sorted(int(m.value()) for m in messages if m.partition() == 0)
    assert set(engine.pending) == set()  # committed, and only partition 0's offsets were pending
    engine.producer.abort_transaction(30)
    engine.consumer.close()
    engine.restorer.close()


def move_the_group_on(pipeline: Pipeline) -> None:
    """Another member joins and leaves: the group's generation moves on twice."""
    other = Consumer({**pipeline.config, "group.id": pipeline.group,
                      "partition.assignment.strategy": "cooperative-sticky"})
    other.subscribe([pipeline.source])
    joined = time.monotonic() + 30
    while not other.assignment() and time.monotonic() < joined:
        other.poll(0.2)
    other.close()


class StaleGeneration:
    """Hands ``engine``, once, the group metadata it had before the group moved on: the next
    offsets it sends are refused (ILLEGAL_GENERATION). ``on_handed`` runs as it is handed."""

    def __init__(self, engine: Engine, on_handed: Callable[[], None] = lambda: None) -> None:
        self.real = engine._group_metadata
        self.on_handed = on_handed
        self.stale: Any = None
        self.handed = threading.Event()
        engine._group_metadata = self._metadata  # type: ignore[method-assign]

    def _metadata(self) -> Any:
        if self.stale is not None and not self.handed.is_set():
            self.on_handed()
            self.handed.set()
            return self.stale
        return self.real()

    def move_the_group_on(self, pipeline: Pipeline) -> None:
        before = self.real()
        move_the_group_on(pipeline)
        self.stale = before


def test_offsets_refused_for_a_generation_the_group_has_left_are_handled_again(ns: Namespace) -> None:
    """A commit racing a rebalance is refused by the broker (ILLEGAL_GENERATION): the worker
    aborts, reads back what was committed, and carries on; nothing is lost or sent twice."""
    pipeline = Pipeline(ns, "engine-generation")
    engine = pipeline.engine()
    stale = StaleGeneration(engine)
    thread = threading.Thread(target=engine.run, kwargs={"install_signal_handlers": False})
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(pipeline.committed(pipeline.output)) < EVENTS and time.monotonic() < deadline:
            time.sleep(0.5)
        stale.move_the_group_on(pipeline)
        producer = Producer(pipeline.config)
        for n in range(EVENTS, 2 * EVENTS):
            producer.produce(pipeline.source, str(n).encode(), f"k{n % 4}".encode(), partition=n % 2)
        assert producer.flush(30) == 0
        deadline = time.monotonic() + 60
        while len(pipeline.committed(pipeline.output)) < 2 * EVENTS and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        engine.stop()
        thread.join(60)
    assert stale.handed.is_set()
    assert not engine.failed  # rewound, not stopped
    outputs = sorted(int(v) for _, v in pipeline.committed(pipeline.output) if v)
    assert outputs == list(range(2 * EVENTS))


def test_an_output_that_cannot_be_produced_commits_none_of_its_batch(ns: Namespace) -> None:
    """produce() itself refusing a message (larger than any the producer sends) mid-batch: the
    batch's offsets were once recorded first and committed on the way out, for outputs never sent."""
    pipeline = Pipeline(ns, "engine-produce")
    too_large = b"x" * (CHANGELOG_MAX_BYTES + 1)

    def handler(record: Record, batch: Batch) -> None:
        batch.send(pipeline.output, record.key, record.value)
        batch.send(pipeline.output, record.key, too_large)

    engine = Engine(pipeline.group, {pipeline.source: handler}, [], pipeline.config, pipeline.config,
                    commit_every_s=0.2, max_batch=EVENTS)
    with pytest.raises(KafkaException):
        engine.run(install_signal_handlers=False)

    assert pipeline.source_offsets() == {0: OFFSET_INVALID, 1: OFFSET_INVALID}
    assert pipeline.committed(pipeline.output) == []


def test_a_source_ending_in_a_transaction_marker_is_committed_to_its_end(ns: Namespace) -> None:
    # Read committed, a partition written in transactions ends in a marker that is never handed
    # over: the last message handled commits the offset of that marker, and a group whose lag
    # reads 1 for ever looks stuck to anyone waiting for it (or alerting on it) to catch up.
    pipeline = Pipeline(ns, "engine-markers", transactional_source=True)
    source = [TopicPartition(pipeline.source, p) for p in range(2)]
    probe = Consumer({**pipeline.config, "group.id": f"{pipeline.group}-probe"})
    ends = {tp.partition: probe.get_watermark_offsets(tp, timeout=10)[1] for tp in source}
    probe.close()
    assert all(end > EVENTS // 2 for end in ends.values()), ends  # markers follow the messages

    # Each message handled and committed alone: the last one is committed before its marker is read.
    engine = pipeline.engine(max_batch=1, commit_every_s=0)
    thread = threading.Thread(target=engine.run, kwargs={"install_signal_handlers": False})
    thread.start()
    deadline = time.monotonic() + 60
    try:
        while pipeline.source_offsets() != ends and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        engine.stop()
        thread.join(60)
    assert pipeline.source_offsets() == ends
    assert sorted(int(v) for _, v in pipeline.committed(pipeline.output) if v) == list(range(EVENTS))


def test_a_transaction_that_sent_offsets_before_its_partitions_moved_is_waited_for(ns: Namespace) -> None:
    """The group fences a transaction's offsets when they are sent, not when it commits: a worker
    paused between the two (a zombie) still commits once it wakes, after its partitions have gone
    to another. Until then the group's offsets are unstable and its changelog writes unread; a
    new owner that reads state back without waiting restores the state from before that
    transaction and reads on from the offsets after it: the events it saw count for nothing."""
    pipeline = Pipeline(ns, "engine-zombie")
    source = [TopicPartition(pipeline.source, p) for p in range(2)]
    zombie = Consumer({**pipeline.config, "group.id": pipeline.group, "enable.auto.commit": False,
                       "isolation.level": "read_committed"})
    zombie.subscribe([pipeline.source])
    deadline = time.monotonic() + 30
    while len(zombie.assignment()) < 2 and time.monotonic() < deadline:
        zombie.poll(0.2)
    assert len(zombie.assignment()) == 2
    producer = Producer({**pipeline.config, "transactional.id": f"{pipeline.group}-zombie"})
    producer.init_transactions(30)
    producer.begin_transaction()
    seen: dict[tuple[int, str], list[str]] = {}
    for n in range(EVENTS):  # the zombie handled every event: outputs, state and offsets
        producer.produce(pipeline.output, str(n).encode(), f"k{n % 4}".encode(), partition=n % 2)
        seen.setdefault((n % 2, f"k{n % 4}"), []).append(str(n))
    for (partition, key), values in seen.items():
        producer.produce(f"{pipeline.group}-seen-changelog", json.dumps(values).encode(), key.encode(),
                         partition=partition)
    producer.send_offsets_to_transaction(
        [TopicPartition(pipeline.source, p, EVENTS // 2) for p in range(2)],
        zombie.consumer_group_metadata(), 30,
    )
    zombie.close()  # gone from the group, its transaction still open

    engine = pipeline.engine()
    thread = threading.Thread(target=engine.run, kwargs={"install_signal_handlers": False})
    thread.start()
    try:
        admin = AdminClient(pipeline.config)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            group = admin.describe_consumer_groups([pipeline.group])[pipeline.group].result(10)
            if sum(len(m.assignment.topic_partitions) for m in group.members) == 2:
                break
            time.sleep(0.2)
        time.sleep(2.0)  # the partitions are the engine's: it is reading their state back, or waiting
        producer.commit_transaction(30)  # the zombie wakes and commits: only its offsets were fenced
        resent = Producer(pipeline.config)
        for n in range(2 * EVENTS):  # its events again, which the engine must know it has seen, and new ones
            resent.produce(pipeline.source, str(n).encode(), f"k{n % 4}".encode(), partition=n % 2)
        assert resent.flush(30) == 0
        ends = {tp.partition: EVENTS // 2 + EVENTS for tp in source}
        deadline = time.monotonic() + 60
        while pipeline.source_offsets() != ends and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        engine.stop()
        thread.join(60)
    assert pipeline.source_offsets() == ends
    outputs = sorted(int(v) for _, v in pipeline.committed(pipeline.output) if v)
    assert outputs == list(range(2 * EVENTS))  # the zombie's 0..39 once, then 40..79; none again


def test_a_transaction_of_timer_outputs_alone_is_checked_against_the_group(ns: Namespace) -> None:
    """A paused worker's timers raise alerts with no event handled. The group checks a
    transaction's generation only through the offsets it sends: one that sent none would commit
    a zombie's alerts unchecked. Every transaction carries the offsets of every partition held."""
    pipeline = Pipeline(ns, "engine-timer-fenced")
    ticks: list[int] = []

    def tick(batch: Batch, assigned: list[Any]) -> None:
        if assigned:
            ticks.append(len(ticks))
            batch.send(pipeline.output, b"timer", f"timer-{ticks[-1]}".encode())

    engine = pipeline.engine(tick=tick, tick_every_s=0.3)
    refused: list[int] = []
    stale = StaleGeneration(engine, lambda: refused.append(ticks[-1]))  # the tick whose transaction it is
    thread = threading.Thread(target=engine.run, kwargs={"install_signal_handlers": False})
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(pipeline.committed(pipeline.output)) < EVENTS and time.monotonic() < deadline:
            time.sleep(0.5)
        stale.move_the_group_on(pipeline)
        deadline = time.monotonic() + 30
        while not (refused and ticks[-1] > refused[0] + 3) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        engine.stop()
        thread.join(60)
    assert refused, "no transaction of timer outputs alone sent offsets for the group to check"
    timers = {v.decode() for k, v in pipeline.committed(pipeline.output) if k == b"timer" and v}
    assert f"timer-{refused[0]}" not in timers  # refused with its generation, not committed
    assert f"timer-{refused[0] + 1}" in timers  # and the worker carried on
