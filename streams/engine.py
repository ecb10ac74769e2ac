"""A lean stream engine: batches from Kafka, state per partition, outputs acknowledged before commits.

One consumer group reads the input topics in batches (librdkafka through confluent-kafka).
Each message goes to the handler of its topic, which reads and writes :class:`Table` state and
sends outputs through the :class:`Batch`; outputs are produced as soon as their batch is
handled. Every ``commit_every_s`` the engine seals a *checkpoint*: the offsets handled since the
last one, and the state of every key changed since then, encoded at that moment. Checkpoints
complete in order and without stopping the handling of new batches: once the broker has
acknowledged every output sent before a checkpoint, its changelog messages are sent; once those
are acknowledged too, its offsets are committed. In that order a changelog never holds state (an
alert marked as raised) whose output was lost. Before partitions are taken away, and on
stopping, the engine waits until every checkpoint is complete.

That is at-least-once: a worker that dies between its outputs and its commit handles those
messages again on restart. The rules ignore an event they have seen (matched on event id) and every
alert id is deterministic, so a batch handled twice changes no state and raises no new alert;
the case stores write each alert id once.

State lives in memory, per source partition. A table's compacted changelog is partitioned like
its source topic: when a worker is given a partition it first reads the changelog partition
back, and when the partition is taken away its state is dropped. Rebalancing is cooperative
by default, so partitions a worker keeps are neither revoked nor read back; the range assignor
(``assignor="range"``) splits every topic evenly between workers instead, and at each rebalance
revokes every partition and reads every one back.
"""

from __future__ import annotations

import logging
import signal
import time
from collections import Counter, deque
from collections.abc import Callable, Generator, Iterable, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from hubstream.metrics import EVENTS_IN, EVENTS_OUT, WORKER_BATCH_SECONDS, WORKER_BATCH_SIZE
from hubstream.settings import DEFAULT_ASSIGNOR

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Record:
    """One consumed message, as handlers see it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int

    @property
    def source(self) -> str:
        return f"{self.topic}:{self.partition}"


@dataclass(frozen=True)
class Parts:
    """How a table writes each value as several changelog messages, so that a change to one part
    of a large value rewrites that part only (a busy hotspot cell holds megabytes).

    ``split`` names a value's parts, each encoded with the table's ``encode``; a part that has not
    changed must be the very same object as last time, which is how the table knows to skip it.
    ``join`` rebuilds a value from its key and its parts' encoded bytes. A part's message key is
    ``<key>/<part name>``.
    """

    split: Callable[[Any], Mapping[str, Any]]
    join: Callable[[str, Mapping[str, bytes]], Any]


# One changelog message: key, value (None: a tombstone), partition.
ChangelogMessage = tuple[bytes, bytes | None, int]


class Table:
    """Keyed state of one kind, held per partition of its source topic.

    ``encode``/``decode`` turn a value into the bytes of its changelog message and back;
    ``None`` deletes the key (a tombstone in the changelog). With ``parts``, each value is
    written as several messages instead (see :class:`Parts`).
    """

    def __init__(
        self,
        name: str,
        source: str,
        encode: Callable[[Any], bytes],
        decode: Callable[[bytes], Any],
        parts: Parts | None = None,
    ) -> None:
        self.name = name
        self.source = source
        self.encode = encode
        self.decode = decode
        self.parts = parts
        self.changelog = ""  # set when the engine is built: <app id>-<name>-changelog
        self.partitions: dict[int, dict[str, Any]] = {}
        self.changed: set[tuple[int, str]] = set()
        # With parts: per partition and key, the part objects the changelog holds now.
        self.written: dict[int, dict[str, Mapping[str, Any]]] = {}

    def get(self, partition: int, key: str) -> Any:
        return self.partitions[partition].get(key)

    def set(self, partition: int, key: str, value: Any) -> None:
        """Store ``value`` (``None`` deletes); the changelog is written at the next checkpoint."""
        if value is None:
            self.partitions[partition].pop(key, None)
        else:
            self.partitions[partition][key] = value
        self.changed.add((partition, key))

    def drop(self, partition: int) -> None:
        """Forget a partition this worker no longer holds."""
        self.partitions.pop(partition, None)
        self.written.pop(partition, None)

    def __len__(self) -> int:
        return sum(len(keys) for keys in self.partitions.values())

    def changelog_messages(self) -> list[ChangelogMessage]:
        """The messages that bring the changelog up to date with every key changed since the
        last call, encoded now."""
        messages: list[ChangelogMessage] = []
        for partition, key in self.changed:
            value = self.partitions.get(partition, {}).get(key)
            if self.parts is None:
                messages.append((key.encode(), None if value is None else self.encode(value), partition))
            else:
                messages += self._part_messages(self.parts, partition, key, value)
        self.changed.clear()
        return messages

    def _part_messages(self, parts: Parts, partition: int, key: str, value: Any) -> list[ChangelogMessage]:
        written = self.written.setdefault(partition, {})
        before = written.pop(key, {})
        now = {} if value is None else parts.split(value)
        messages: list[ChangelogMessage] = [
            (f"{key}/{name}".encode(), self.encode(part), partition)
            for name, part in now.items()
            if before.get(name) is not part
        ]
        messages += [(f"{key}/{name}".encode(), None, partition) for name in before.keys() - now.keys()]
        if now:
            written[key] = now
        return messages

    def restore(self, partition: int, messages: Iterable[tuple[str, bytes | None]]) -> int:
        """Read ``partition`` back from its changelog's messages (key, value), in order; the
        number of keys it holds."""
        state = self.partitions[partition] = {}
        if self.parts is None:
            for key, value in messages:
                if value is None:
                    state.pop(key, None)
                else:
                    state[key] = self.decode(value)
            return len(state)
        encoded: dict[str, dict[str, bytes]] = {}
        for message_key, value in messages:
            key, slash, name = message_key.rpartition("/")
            if not slash:
                raise ValueError(
                    f"{self.changelog}[{partition}]: key {message_key!r} is not <key>/<part>; "
                    f"the changelog predates {self.name} state in parts (see the README on upgrading)"
                )
            if value is None:
                encoded.get(key, {}).pop(name, None)
            else:
                encoded.setdefault(key, {})[name] = value
        written = self.written[partition] = {}
        for key, held in encoded.items():
            if held:
                state[key] = value = self.parts.join(key, held)
                written[key] = self.parts.split(value)
        return len(state)


@dataclass
class Batch:
    """What handlers send while a batch is handled; produced by the engine."""

    outputs: list[tuple[str, bytes | None, bytes, int | None, int | None]] = field(default_factory=list)
    events_in: Counter[tuple[str, str]] = field(default_factory=Counter)

    def send(
        self, topic: str, key: bytes | None, value: bytes, timestamp_ms: int | None = None,
        *, partition: int | None = None,
    ) -> None:
        """Queue a message; ``partition`` only for messages meant for one partition (marks)."""
        self.outputs.append((topic, key, value, timestamp_ms, partition))

    def consumed(self, topic: str, schema: str) -> None:
        self.events_in[(topic, schema)] += 1


Handler = Callable[[Record, Batch], None]
SLOW_S = 0.25  # a batch or commit slower than this is logged
CHANGELOG_MAX_BYTES = 64 * 1024 * 1024  # largest state a changelog message may carry
MAX_SEALED = 2  # checkpoints awaiting the broker before the worker waits for them


@dataclass(frozen=True)
class Assigned:
    """A partition this worker reads, when it was given it, whether it has ever had data, and
    whether this worker has read all it holds (both ask the broker); ``unread`` says whether the
    last fetch from the broker showed messages beyond those consumed (asks no one)."""

    topic: str
    partition: int
    since: float  # time.monotonic()
    empty: Callable[[], bool]
    caught_up: Callable[[], bool]
    unread: Callable[[], bool]


# Called every ``tick_every_s`` with a batch to send through and the partitions held now.
Tick = Callable[[Batch, list[Assigned]], None]
# Called before each batch is handled, with the batch (what it sends goes first), the partitions
# held now and the (topic, partition) pairs that the batch's messages come from.
BeforeBatch = Callable[[Batch, list[Assigned], set[tuple[str, int]]], None]


class DeliveryFailed(RuntimeError):
    pass


class Engine:
    """Runs ``handlers`` (one per input topic) over the group ``app_id`` until stopped."""

    def __init__(
        self,
        app_id: str,
        handlers: dict[str, Handler],
        tables: Iterable[Table],
        consumer_config: dict[str, Any],
        producer_config: dict[str, Any],
        *,
        max_batch: int = 5000,
        poll_timeout_s: float = 0.1,
        tick: Tick | None = None,
        tick_every_s: float = 5.0,
        before_batch: BeforeBatch | None = None,
        assignor: str = DEFAULT_ASSIGNOR,
        commit_every_s: float = 2.0,
    ) -> None:
        self.app_id = app_id
        self.handlers = handlers
        self.tables = list(tables)
        for table in self.tables:
            if table.source not in handlers:
                raise ValueError(f"table {table.name} is fed by {table.source}, which no handler reads")
            table.changelog = f"{app_id}-{table.name}-changelog"
        self.max_batch = max_batch
        self.poll_timeout_s = poll_timeout_s
        self.tick = tick
        self.tick_every_s = tick_every_s
        self.before_batch = before_batch
        self.assigned: dict[tuple[str, int], Assigned] = {}
        self.start_offsets: dict[tuple[str, int], int] = {}  # committed when assigned, asked once
        self.commit_every_s = commit_every_s
        self.next_commit = 0.0
        self.pending: dict[tuple[str, int], int] = {}  # offsets handled since the last checkpoint
        self.failures: list[str] = []  # messages the broker refused, from every checkpoint
        self.open = _Checkpoint(self.failures)  # outputs sent since the last checkpoint count here
        self.sealed: deque[_Checkpoint] = deque()  # oldest first
        self.refused: dict[tuple[str, int], int] = {}  # offsets of a refused commit, tried again
        self.consumer = Consumer(
            {
                **consumer_config,
                "group.id": app_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": assignor,
                "max.poll.interval.ms": 600_000,  # reading back a large changelog happens inside a poll
                # Prefetched messages wait here (librdkafka's default is 64 MiB); a few batches
                # ahead is enough to keep the worker busy.
                "queued.max.messages.kbytes": 16_384,
            }
        )
        self.restorer = Consumer(
            {
                **consumer_config,
                "group.id": f"{app_id}-restore",  # never subscribes or commits: assigned partitions only
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
        self.producer = Producer(
            {
                **producer_config,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "batch.size": 1_000_000,
                "queue.buffering.max.messages": 1_000_000,
                "delivery.report.only.error": False,  # every acknowledgement completes checkpoints
                # A busy hotspot cell's state runs to megabytes of JSON: allowed up to the
                # changelogs' own limit. Not compressed: the alert topics are read by clients
                # (police systems, kafka-python) that may lack lz4 or zstd.
                "message.max.bytes": CHANGELOG_MAX_BYTES,
            }
        )
        self.running = False
        self.handled = 0

    # -- lifecycle -------------------------------------------------------------------------

    def run(self, *, install_signal_handlers: bool = True) -> None:
        if install_signal_handlers:
            signal.signal(signal.SIGTERM, lambda *_: self.stop())
            signal.signal(signal.SIGINT, lambda *_: self.stop())
        self.running = True
        self.consumer.subscribe(
            list(self.handlers), on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._revoked
        )
        log.info("worker %s reading %s", self.app_id, ", ".join(self.handlers))
        next_tick = time.monotonic() + self.tick_every_s
        try:
            while self.running:
                messages = self._next_batch()
                if messages:
                    self._handle(messages)
                else:
                    self.producer.poll(0)
                now = time.monotonic()
                if self.tick is not None and now >= next_tick:
                    batch = Batch()
                    self.tick(batch, list(self.assigned.values()))
                    self._send(batch)
                    next_tick = now + self.tick_every_s
                if now >= self.next_commit:
                    self._seal()
                    # A broker falling behind holds checkpoints (and their encoded state) here:
                    # beyond a few, wait for it rather than let them pile up in memory.
                    self._wait_until_sealed(MAX_SEALED)
                self._advance()
            self._complete()  # stopped between batches: what was handled is kept
        finally:
            self.producer.flush(30)
            self.consumer.close()
            self.restorer.close()
            log.info("worker %s stopped after %d events", self.app_id, self.handled)

    def _next_batch(self) -> list[Message]:
        """What has arrived, up to ``max_batch``, without waiting for a batch to fill: a lone
        event is handled at once, a backlog in large batches."""
        messages: list[Message] = self.consumer.consume(self.max_batch, 0)
        if not messages:
            messages = self.consumer.consume(1, self.poll_timeout_s)  # wait for traffic
            if messages and self.max_batch > 1:
                messages += self.consumer.consume(self.max_batch - 1, 0)
        return messages

    def stop(self) -> None:
        self.running = False

    # -- one batch -------------------------------------------------------------------------

    def _handle(self, messages: list[Message]) -> None:
        started = time.perf_counter()
        batch = Batch()
        offsets: dict[tuple[str, int], int] = {}
        records: list[Record] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(error)
            topic: str = message.topic()
            partition: int = message.partition()
            offset: int = message.offset()
            value = message.value() or b""
            records.append(Record(topic, partition, offset, message.key(), value, message.timestamp()[1]))
            offsets[(topic, partition)] = offset + 1
        if self.before_batch is not None:
            self.before_batch(batch, list(self.assigned.values()), set(offsets))
        handlers = self.handlers
        for record in records:
            handlers[record.topic](record, batch)
        self.pending.update(offsets)
        self._send(batch)  # now, not at the commit: alerts leave as soon as they are raised
        self.producer.poll(0)
        for (topic, schema), n in batch.events_in.items():
            EVENTS_IN.labels(topic=topic, schema=schema).inc(n)
        self.handled += len(messages)
        WORKER_BATCH_SIZE.observe(len(messages))
        took = time.perf_counter() - started
        WORKER_BATCH_SECONDS.observe(took)
        if took > SLOW_S:
            log.info("slow batch: %d messages in %.2f s", len(messages), took)

    def _seal(self) -> None:
        """Close the open checkpoint: the offsets handled so far and the state they left."""
        checkpoint, self.open = self.open, _Checkpoint(self.failures)
        checkpoint.offsets, self.pending = self.pending, {}
        for table in self.tables:
            checkpoint.changelog += [(table.changelog, *message) for message in table.changelog_messages()]
        self.sealed.append(checkpoint)
        self.next_commit = time.monotonic() + self.commit_every_s

    def _advance(self) -> None:
        """Take the oldest checkpoints as far as the broker's acknowledgements allow."""
        if self.failures:
            raise DeliveryFailed(
                f"{len(self.failures)} messages refused by the broker, offsets not committed: "
                + "; ".join(self.failures[:5])
            )
        while self.sealed:
            checkpoint = self.sealed[0]
            if checkpoint.unacknowledged:
                return  # its outputs (or changelog messages) are still on their way
            if checkpoint.changelog:
                # Outputs first: state that says an alert was raised must never reach the changelog
                # ahead of the alert itself, or a crash between the two would lose the alert for good.
                for topic, key, data, partition in checkpoint.changelog:
                    self._produce(topic, key, data, partition=partition, checkpoint=checkpoint)
                checkpoint.changelog = []
                continue
            self.sealed.popleft()
            self._commit_offsets(checkpoint.offsets)

    def _commit_offsets(self, offsets: dict[tuple[str, int], int]) -> None:
        offsets = {**self.refused, **offsets}  # later offsets of a partition replace earlier ones
        if not offsets:
            return
        started = time.perf_counter()
        try:
            self.consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
            )
        except KafkaException as exc:
            # Refused during a rebalance, say: kept, and tried again with the next checkpoint. An
            # asynchronous commit lost this way left a group behind for good.
            log.warning("commit of %d partitions refused (%s); trying again", len(offsets), exc)
            self.refused = offsets
        else:
            self.refused = {}
        took = time.perf_counter() - started
        if took > SLOW_S:
            log.info("slow commit: %d partitions in %.2f s", len(offsets), took)

    def _complete(self) -> None:
        """Seal what has been handled and wait until every checkpoint is committed."""
        self._seal()
        self._wait_until_sealed(0)

    def _wait_until_sealed(self, most: int, timeout_s: float = 60.0) -> None:
        """Wait for acknowledgements until at most ``most`` checkpoints are incomplete."""
        deadline = time.monotonic() + timeout_s
        while True:
            self._advance()
            if len(self.sealed) <= most:
                return
            if time.monotonic() > deadline:
                raise DeliveryFailed(f"outputs not acknowledged in {timeout_s:.0f} s; offsets not committed")
            self.producer.poll(0.05)

    def _send(self, batch: Batch) -> None:
        out: Counter[str] = Counter()
        for topic, key, value, timestamp_ms, partition in batch.outputs:
            self._produce(topic, key, value, timestamp_ms=timestamp_ms, partition=partition)
            out[topic] += 1
        for topic, n in out.items():
            EVENTS_OUT.labels(topic=topic).inc(n)

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        checkpoint: _Checkpoint | None = None,
    ) -> None:
        """Send a message; it counts against ``checkpoint`` (default: the open one) until acknowledged."""
        counted = checkpoint or self.open
        while True:
            try:
                # partition -1 and timestamp 0 are librdkafka's "not given"
                self.producer.produce(
                    topic, value, key, -1 if partition is None else partition, counted.delivered,
                    timestamp_ms or 0,
                )
                break
            except BufferError:
                self.producer.poll(0.05)  # the local queue is full: let deliveries drain it
        counted.unacknowledged += 1

    # -- partitions coming and going ----------------------------------------------------------

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        now = time.monotonic()
        for tp in partitions:
            held = TopicPartition(tp.topic, tp.partition)
            self.assigned[(tp.topic, tp.partition)] = Assigned(
                tp.topic, tp.partition, now, partial(self._empty, held), partial(self._caught_up, held),
                partial(self._unread, held),
            )
            for table in self.tables:
                if table.source == tp.topic:
                    self._restore(table, tp.partition)
        log.info("assigned %s", _names(partitions))

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._complete()  # the next owner starts from what this worker has handled
        for tp in partitions:
            self.refused.pop((tp.topic, tp.partition), None)  # if refused, the next owner redoes it
            self.assigned.pop((tp.topic, tp.partition), None)
            self.start_offsets.pop((tp.topic, tp.partition), None)
            for table in self.tables:
                if table.source == tp.topic:
                    table.drop(tp.partition)
        log.info("revoked %s", _names(partitions))

    def _restore(self, table: Table, partition: int) -> None:
        """Read the state of ``partition`` back from the table's changelog."""
        low, high = self._offsets_of(TopicPartition(table.changelog, partition))
        if high <= low:
            table.restore(partition, ())
            return
        started = time.monotonic()
        # Closed at once, so that the restorer lets go of the partition even if reading fails.
        with closing(self._read_back(table.changelog, partition, high)) as messages:
            keys = table.restore(partition, messages)
        log.info(
            "restored %s[%d]: %d keys in %.1f s", table.changelog, partition, keys, time.monotonic() - started
        )

    def _read_back(self, changelog: str, partition: int, high: int) -> Generator[tuple[str, bytes | None]]:
        """Every message of a changelog partition below offset ``high``, from the first: (key, value)."""
        self.restorer.assign([TopicPartition(changelog, partition, OFFSET_BEGINNING)])
        try:
            done = False
            while not done:
                # A short wait: consume() waits this long whenever fewer messages are left.
                for message in self.restorer.consume(10_000, 0.05):
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            done = True
                            continue
                        raise KafkaException(error)
                    yield message.key().decode(), message.value()
                    if message.offset() >= high - 1:
                        done = True
        finally:
            self.restorer.unassign()

    def _empty(self, tp: TopicPartition) -> bool:
        low, high = self._offsets_of(tp)
        return high <= low

    def _caught_up(self, tp: TopicPartition) -> bool:
        _, high = self._offsets_of(tp)
        return self._read_from(tp) >= high

    def _unread(self, tp: TopicPartition) -> bool:
        low, high = self.consumer.get_watermark_offsets(tp, cached=True)  # -1001 until a fetch
        return bool(high > 0 and high > max(self._read_from(tp), low, 0))

    def _read_from(self, tp: TopicPartition) -> int:
        """The next offset this worker reads in ``tp``: its position or, with nothing consumed
        since the partition was assigned, where the group left off (asked once per assignment)."""
        [read] = self.consumer.position([tp])
        if read.offset >= 0:
            return int(read.offset)
        key = (tp.topic, tp.partition)
        start = self.start_offsets.get(key)
        if start is None:
            [committed] = self.consumer.committed([tp], timeout=10)
            start = self.start_offsets[key] = int(committed.offset)
        return start

    def _offsets_of(self, tp: TopicPartition, wait_s: float = 60.0) -> tuple[int, int]:
        """(low, high) offsets of a partition, waiting out a topic the broker is still making."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                low, high = self.restorer.get_watermark_offsets(tp, timeout=10)
                return int(low), int(high)
            except KafkaException as exc:
                if (
                    (not exc.args[0].retriable()
                    and exc.args[0].code() not in _NOT_READY)
                    or time.monotonic() > deadline
                ):
                    raise
                time.sleep(0.2)


@dataclass(eq=False)
class _Checkpoint:
    """Offsets handled before a commit point, the changelog messages of the state they left, and
    how many messages sent on its account the broker has yet to acknowledge."""

    failures: list[str]  # the engine's: any refusal stops it
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    changelog: list[tuple[str, bytes, bytes | None, int]] = field(default_factory=list)
    unacknowledged: int = 0

    def delivered(self, error: KafkaError | None, message: Message) -> None:
        """librdkafka's delivery report of a message sent on this checkpoint's account."""
        self.unacknowledged -= 1
        if error is not None:
            self.failures.append(f"{message.topic()}[{message.partition()}]: {error.str()}")


_NOT_READY = (
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
)


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
