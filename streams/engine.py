"""A lean stream engine on Kafka's own transactions: batches in, state per partition, exactly once.

One consumer group reads the input topics in batches (librdkafka through confluent-kafka).
Each message goes to the handler of its topic, which reads and writes :class:`Table` state and
sends outputs through the :class:`Batch`; outputs are produced as soon as their record is
handled. The producer is transactional, as Kafka Streams' exactly-once (v2) is: every
``commit_every_s`` the engine writes the changelog messages of every key changed since the last
commit, adds the input offsets handled (``send_offsets_to_transaction`` with the consumer's group
metadata) and commits the transaction. Outputs, state and offsets become visible together or not
at all: readers that read committed (the sinks, the worker's own re-keyed topics, the restore of
a changelog) never see an alert whose state or offsets were lost, nor state without its alert.
A worker that the group has given up on (a lapsed session, a frozen VM) is fenced: the broker
refuses its offsets for an old generation, so its transaction cannot commit.

Handling is per record. A record whose handler raises is dead-lettered with the exception
(``on_poison``), and every table change and output it made is undone first, so the rules' state
is exactly as before it. An error that is not the record's (the broker, the network, the
transaction) aborts the transaction and stops the engine with an exception: nothing of the open
transaction is kept, nothing is committed on the way out, and the supervisor restarts the worker,
which reads the committed state back. On a graceful revoke the open transaction is committed
first; on a lost assignment it is aborted and the engine stops.

State lives in memory, per source partition. A table's compacted changelog is partitioned like
its source topic: when a worker is given a partition it first reads the changelog partition
back (committed messages only), and when the partition is taken away its state is dropped, with
every per-partition structure the handlers keep (``on_revoke``). Messages fetched for a partition
no longer held are skipped. Rebalancing is cooperative by default, so partitions a worker keeps
are neither revoked nor read back; the range assignor (``assignor="range"``) splits every topic
evenly between workers instead, and at each rebalance revokes every partition and reads every
one back.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Mapping
from contextlib import closing, suppress
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

from hubstream.metrics import (
    EVENTS_IN,
    EVENTS_OUT,
    POISONED,
    TRANSACTION_SECONDS,
    WORKER_BATCH_SECONDS,
    WORKER_BATCH_SIZE,
)
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
_ABSENT = object()  # a key a table did not hold, in a journal entry
# What a record changed, oldest first, to be undone if its handling fails: table, partition, key,
# the value before (or _ABSENT).
Journal = list[tuple["Table", int, str, Any]]


class Table:
    """Keyed state of one kind, held per partition of its source topic.

    ``encode``/``decode`` turn a value into the bytes of its changelog message and back;
    ``None`` deletes the key (a tombstone in the changelog). With ``parts``, each value is
    written as several messages instead (see :class:`Parts`). While the engine handles a record,
    every change is journalled so that a record whose handling fails leaves no trace.
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
        self.journal: Journal | None = None  # the engine's, while it runs

    def get(self, partition: int, key: str) -> Any:
        return self.partitions[partition].get(key)

    def set(self, partition: int, key: str, value: Any) -> None:
        """Store ``value`` (``None`` deletes); the changelog is written at the next commit."""
        self.hold(partition, key, value)
        self.changed.add((partition, key))

    def hold(self, partition: int, key: str, value: Any) -> None:
        """Store ``value`` in memory only: the changelog has it once the key is next ``set``."""
        held = self.partitions[partition]
        if self.journal is not None:
            self.journal.append((self, partition, key, held.get(key, _ABSENT)))
        if value is None:
            held.pop(key, None)
        else:
            held[key] = value

    def undo(self, partition: int, key: str, before: Any) -> None:
        held = self.partitions.get(partition)
        if held is None:
            return
        if before is _ABSENT:
            held.pop(key, None)
        else:
            held[key] = before

    def drop(self, partition: int) -> None:
        """Forget a partition this worker no longer holds."""
        self.partitions.pop(partition, None)
        self.written.pop(partition, None)
        self.changed = {(p, key) for p, key in self.changed if p != partition}

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
# Told of a record whose handler raised, with a batch to send its dead letter through.
Poison = Callable[[Record, Batch, Exception], None]
# Told of the (topic, partition) pairs taken away, to forget what handlers keep per partition.
Revoked = Callable[[list[tuple[str, int]]], None]
SLOW_S = 0.25  # a batch or commit slower than this is logged
CHANGELOG_MAX_BYTES = 64 * 1024 * 1024  # largest state a changelog message may carry
# How long the broker lets a transaction stay open before aborting it: a worker frozen for longer
# (or killed with a transaction open) is fenced by the abort, and readers that read committed
# wait at most this long behind a killed worker's transaction. A restarted worker with the same
# instance aborts it at once instead.
TRANSACTION_TIMEOUT_MS = 30_000
# Kafka Streams' default under exactly-once: an alert is visible to readers that read committed,
# and an observation to the worker's own re-keyed reading, at most this long after it is raised.
COMMIT_EVERY_S = 0.1
CALL_TIMEOUT_S = 60.0  # for one transactional call, retried while the broker says it may pass
# A previous owner's open transaction ends within its timeout, the broker's abort check (every
# 10 s) and a margin.
STABLE_OFFSETS_WAIT_S = TRANSACTION_TIMEOUT_MS / 1000 + 10 + CALL_TIMEOUT_S
# Not the record's fault: these stop the engine, where any other exception poisons the record.
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (KafkaException, OSError, MemoryError)


def stable_instance() -> str | None:
    """``HUBSTREAM_WORKER_INSTANCE``: this worker's instance, stable across restarts, as a
    supervisor gives it (the unit's instance name, the pod's name)."""
    return os.environ.get("HUBSTREAM_WORKER_INSTANCE") or None


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
    """The transaction could not commit (an output refused, the worker fenced); it was aborted."""


class Rebalancing(DeliveryFailed):
    """The group moved to a new generation while offsets were being committed: the transaction
    was refused, not the worker, which reads back what was committed and carries on."""


# What TxnOffsetCommit answers for offsets sent under a generation the group has just left.
_REBALANCING = frozenset(
    {KafkaError.ILLEGAL_GENERATION, KafkaError.REBALANCE_IN_PROGRESS, KafkaError.UNKNOWN_MEMBER_ID}
)


class PartitionsLost(RuntimeError):
    """The group took this worker's partitions without a revoke: its transaction was aborted."""


class Engine:
    """Runs ``handlers`` (one per input topic) over the group ``app_id`` until stopped.

    Any failure other than a poisoned record ends :meth:`run` with an exception, the open
    transaction aborted: the caller exits non-zero and its supervisor starts it again.
    """

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
        on_poison: Poison | None = None,
        on_revoke: Revoked | None = None,
        assignor: str = DEFAULT_ASSIGNOR,
        commit_every_s: float = COMMIT_EVERY_S,
        instance: str | None = None,
    ) -> None:
        """``instance``, stable across restarts of one worker process (default
        ``HUBSTREAM_WORKER_INSTANCE``), names the transactional id and the static group
        membership: a restarted worker takes its partitions straight back and aborts what its
        predecessor left open. Without one, host and process id name the transactional id and
        membership is dynamic."""
        instance = instance or stable_instance()
        self.app_id = app_id
        self.handlers = handlers
        self.tables = list(tables)
        self.journal: Journal = []
        for table in self.tables:
            if table.source not in handlers:
                raise ValueError(f"table {table.name} is fed by {table.source}, which no handler reads")
            table.changelog = f"{app_id}-{table.name}-changelog"
            table.journal = self.journal
        self.max_batch = max_batch
        self.poll_timeout_s = poll_timeout_s
        self.tick = tick
        self.tick_every_s = tick_every_s
        self.before_batch = before_batch
        self.on_poison = on_poison
        self.on_revoke = on_revoke
        self.assigned: dict[tuple[str, int], Assigned] = {}
        # The group's committed offset per partition held, as far as this worker knows: asked
        # once when first needed after the partition is assigned, then what it commits itself.
        self.committed_offsets: dict[tuple[str, int], int] = {}
        self.commit_every_s = commit_every_s
        self.next_commit = 0.0
        self.pending: dict[tuple[str, int], int] = {}  # offsets handled in the open transaction
        self.produced = 0  # messages sent in the open transaction
        self.failed = False  # once set, nothing more is committed
        self.transactional_id = f"{app_id}-{instance or f'{socket.gethostname()}-{os.getpid()}'}"
        # Static membership: the group keeps a restarted worker's partitions for it through its
        # session, instead of waiting that long for the dead member and then rebalancing; a
        # paused one coming back is fenced by its successor (FENCED_INSTANCE_ID).
        membership = {"group.instance.id": f"{app_id}-{instance}"} if instance else {}
        self.consumer = Consumer(
            {
                **consumer_config,
                **membership,
                "group.id": app_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
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
                "isolation.level": "read_committed",
                # Read committed, a changelog's last offset is a transaction marker, never
                # delivered: the read ends at the partition's end, which only a fetch that finds
                # nothing reports, after the broker has held it this long (librdkafka: 500 ms, a
                # second per changelog partition at every start).
                "fetch.wait.max.ms": 10,
            }
        )
        self.producer = Producer(
            {
                **producer_config,
                "transactional.id": self.transactional_id,
                "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
                "acks": "all",
                "linger.ms": 5,
                "batch.size": 1_000_000,
                "queue.buffering.max.messages": 1_000_000,
                # A busy hotspot cell's state runs to megabytes of JSON: allowed up to the
                # changelogs' own limit. Not compressed: the alert topics are read by clients
                # (police systems, kafka-python) that may lack lz4 or zstd.
                "message.max.bytes": CHANGELOG_MAX_BYTES,
            }
        )
        self.running = False
        self.handled = 0
        self.poisoned = 0

    # -- lifecycle -------------------------------------------------------------------------

    def run(self, *, install_signal_handlers: bool = True) -> None:
        if install_signal_handlers:
            signal.signal(signal.SIGTERM, lambda *_: self.stop())
            signal.signal(signal.SIGINT, lambda *_: self.stop())
        self.running = True
        # Fences an earlier process with the same transactional id and aborts what it left open.
        self._call("init_transactions", self.producer.init_transactions, CALL_TIMEOUT_S)
        self.producer.begin_transaction()
        self.consumer.subscribe(
            list(self.handlers), on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )
        log.info("worker %s (transactional id %s) reading %s", self.app_id, self.transactional_id,
                 ", ".join(self.handlers))
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
                    self._commit()
            self._commit()  # stopped between batches: what was handled is kept
        except BaseException:
            self._fail()
            raise
        finally:
            with suppress(KafkaException, RuntimeError):
                self.consumer.close()  # a revoke: commits nothing once failed
            self.restorer.close()
            log.info("worker %s stopped after %d events (%d poisoned)", self.app_id, self.handled,
                     self.poisoned)

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

    def _fail(self) -> None:
        """Abort the open transaction (what it held is not kept) and commit nothing more."""
        if self.failed:
            return
        self.failed = True
        log.error("worker %s: aborting its open transaction (%d handled messages are read again by "
                  "the next owner)", self.app_id, sum(1 for _ in self.pending))
        with suppress(KafkaException):
            self.producer.abort_transaction(CALL_TIMEOUT_S)

    # -- one batch -------------------------------------------------------------------------

    def _handle(self, messages: list[Message]) -> None:
        started = time.perf_counter()
        batch = Batch()
        offsets: dict[tuple[str, int], int] = {}
        records: list[Record] = []
        assigned = self.assigned
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(error)
            topic: str = message.topic()
            partition: int = message.partition()
            if (topic, partition) not in assigned:
                continue  # fetched before its partition was taken away: the next owner reads it
            offset: int = message.offset()
            value = message.value() or b""
            records.append(Record(topic, partition, offset, message.key(), value, message.timestamp()[1]))
            offsets[(topic, partition)] = offset + 1
        if self.before_batch is not None:
            self.before_batch(batch, list(assigned.values()), set(offsets))
        handlers = self.handlers
        journal = self.journal
        for record in records:
            done = len(batch.outputs)
            try:
                handlers[record.topic](record, batch)
            except INFRASTRUCTURE_ERRORS:
                raise
            except Exception as exc:
                self._poisoned(record, batch, exc, done)
            journal.clear()
        self.pending.update(offsets)
        self._send(batch)  # now, not at the commit: alerts leave as soon as they are raised
        self.producer.poll(0)
        for (topic, schema), n in batch.events_in.items():
            EVENTS_IN.labels(topic=topic, schema=schema).inc(n)
        self.handled += len(records)
        WORKER_BATCH_SIZE.observe(len(records))
        took = time.perf_counter() - started
        WORKER_BATCH_SECONDS.observe(took)
        if took > SLOW_S:
            log.info("slow batch: %d messages in %.2f s", len(records), took)

    def _poisoned(self, record: Record, batch: Batch, exc: Exception, outputs_before: int) -> None:
        """Undo what the record did, then dead-letter it (or stop, with no one to tell)."""
        for table, partition, key, before in reversed(self.journal):
            table.undo(partition, key, before)
        self.journal.clear()
        del batch.outputs[outputs_before:]
        if self.on_poison is None:
            raise exc
        self.poisoned += 1
        POISONED.labels(topic=record.topic).inc()
        log.exception("%s[%d]@%d: handling failed; dead-lettered, state unchanged",
                      record.topic, record.partition, record.offset, exc_info=exc)
        self.on_poison(record, batch, exc)

    # -- the transaction ---------------------------------------------------------------------

    def _commit(self) -> None:
        """Commit the open transaction: outputs sent, changed state, offsets handled; begin the next."""
        self.next_commit = time.monotonic() + self.commit_every_s
        if self.failed:
            return
        for table in self.tables:
            for key, data, partition in table.changelog_messages():
                self._produce(table.changelog, key, data, partition=partition)
        if not self.produced and not self.pending:
            self.pending = self._past_markers()
            if not self.pending:
                return
        started = time.perf_counter()
        offsets = self._positions(self.pending)
        try:
            if offsets:
                self._call(
                    "send_offsets_to_transaction", self.producer.send_offsets_to_transaction,
                    offsets, self._group_metadata(), CALL_TIMEOUT_S,
                )
            self._call("commit_transaction", self.producer.commit_transaction, CALL_TIMEOUT_S)
        except Rebalancing as exc:
            self._rewind(exc)
            return
        self.committed_offsets.update({(tp.topic, tp.partition): tp.offset for tp in offsets})
        self.pending = {}
        self.produced = 0
        self.producer.begin_transaction()
        took = time.perf_counter() - started
        TRANSACTION_SECONDS.observe(took)
        if took > SLOW_S:
            log.info("slow commit: %d partitions in %.2f s", len(offsets), took)

    def _group_metadata(self) -> Any:
        """The consumer's group member and generation, which fence the offsets of a transaction."""
        return self.consumer.consumer_group_metadata()

    def _rewind(self, why: Rebalancing) -> None:
        """Abort the transaction and go back to what was committed: every partition's state read
        back from its changelog, every input read again from the group's committed offset.

        The partitions are still this worker's (a cooperative rebalance takes none away before its
        owner revokes it; a lost one stops the worker through ``on_lost``); only the transaction
        that raced the group's new generation is lost, and it is handled again."""
        log.warning("%s; aborting the transaction and reading back what was committed", why)
        self._call("abort_transaction", self.producer.abort_transaction, CALL_TIMEOUT_S)
        self.pending = {}
        self.produced = 0
        self.producer.begin_transaction()
        held = [TopicPartition(topic, partition) for topic, partition in self.assigned]
        if self.on_revoke is not None:
            self.on_revoke(list(self.assigned))
        self._await_stable_offsets(held)
        for tp in held:
            for table in self.tables:
                if table.source == tp.topic:
                    table.drop(tp.partition)
                    self._restore(table, tp.partition)
            committed = self.committed_offsets[(tp.topic, tp.partition)]
            start = committed if committed >= 0 else OFFSET_BEGINNING
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, start))

    def _past_markers(self) -> dict[tuple[str, int], int]:
        """Partitions held whose position has moved past their committed offset with nothing
        handled: read committed, the transaction markers a topic ends in are skipped, never handed
        over. Committed too, or the group's lag would read 1 for ever on each of them."""
        held = [TopicPartition(t, p) for t, p in self.assigned]
        return {
            (tp.topic, tp.partition): tp.offset
            for tp in self.consumer.position(held)
            if tp.offset >= 0 and tp.offset > self._committed_offset(tp)
        }

    def _positions(self, handled: dict[tuple[str, int], int]) -> list[TopicPartition]:
        """The offsets to commit: every partition held, not only those handled, so that the
        group checks every transaction against its generation (a paused worker's timers raise
        alerts with no event handled). Where it is past the last message handled, the consumer's
        position (a transaction's marker follows the re-keyed topics' last messages, and a
        group's lag reads 0 only past it); else the next offset after it, or the group's own."""
        held = [TopicPartition(t, p) for t, p in self.assigned]
        positions = {(tp.topic, tp.partition): tp.offset for tp in self.consumer.position(held)}
        offsets = []
        for tp in held:
            key = (tp.topic, tp.partition)
            offset = max(handled.get(key, -1), positions.get(key, -1))
            if offset < 0:
                offset = self._committed_offset(tp)
            if offset >= 0:
                offsets.append(TopicPartition(tp.topic, tp.partition, offset))
        return offsets

    def _call(self, what: str, call: Callable[..., Any], *args: Any) -> Any:
        """A transactional call, retried while the broker says it may yet pass; an error that
        needs the transaction aborted, or any other, ends the engine (aborted by ``run``)."""
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while True:
            try:
                return call(*args)
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.retriable() and time.monotonic() < deadline:
                    log.info("%s: %s; trying again", what, error.str())
                    time.sleep(0.1)
                    continue
                if error.code() in _REBALANCING and error.txn_requires_abort():
                    raise Rebalancing(f"{what}: {error.str()}") from exc
                raise DeliveryFailed(
                    f"{what} failed ({error.str()}): the transaction is aborted and nothing it held is "
                    "committed; the worker stops for its supervisor to restart it"
                ) from exc

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
    ) -> None:
        """Send a message in the open transaction (refusals surface when it commits)."""
        while True:
            try:
                # partition -1 and timestamp 0 are librdkafka's "not given"
                self.producer.produce(
                    topic, value, key, -1 if partition is None else partition, None, timestamp_ms or 0
                )
                break
            except BufferError:
                self.producer.poll(0.05)  # the local queue is full: let deliveries drain it
        self.produced += 1

    # -- partitions coming and going ----------------------------------------------------------

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Restoring can take long: not inside a transaction the broker would time out.
        self._commit()
        self._await_stable_offsets(partitions)
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

    def _await_stable_offsets(self, partitions: list[TopicPartition]) -> None:
        """Wait for the group's offsets of ``partitions`` to be stable, and keep them.

        The group fences a transaction's offsets when they are sent, not when it commits: a
        previous owner paused between the two commits after the partitions are this worker's.
        Until it ends (committed, or aborted by the broker after its timeout) its changelog
        writes are unread and the group's offsets unstable. Asked read committed, the group
        answers only once they are stable; state read back before then would be older than the
        offsets read on from."""
        wanted = [TopicPartition(tp.topic, tp.partition) for tp in partitions]
        if not wanted:
            return
        for tp in self.consumer.committed(wanted, timeout=STABLE_OFFSETS_WAIT_S):
            self.committed_offsets[(tp.topic, tp.partition)] = int(tp.offset)

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._commit()  # the next owner starts from what this worker has handled (nothing if failed)
        self._forget(partitions)
        log.info("revoked %s", _names(partitions))

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Partitions the group gave away while this worker was not looking: another owner may
        already be writing their changelogs, so nothing of the open transaction may commit."""
        log.error("lost %s: the group gave them away (a lapsed session or poll interval)",
                  _names(partitions))
        self._fail()
        self._forget(partitions)
        raise PartitionsLost(f"lost {_names(partitions)}; the open transaction was aborted")

    def _forget(self, partitions: list[TopicPartition]) -> None:
        gone = [(tp.topic, tp.partition) for tp in partitions]
        for topic, partition in gone:
            self.assigned.pop((topic, partition), None)
            self.committed_offsets.pop((topic, partition), None)
            self.pending.pop((topic, partition), None)
            for table in self.tables:
                if table.source == topic:
                    table.drop(partition)
        if self.on_revoke is not None:
            self.on_revoke(gone)

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
                if not done:
                    [at] = self.restorer.position([TopicPartition(changelog, partition)])
                    done = at.offset >= high  # past the last marker
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
        return self._committed_offset(tp)

    def _committed_offset(self, tp: TopicPartition) -> int:
        key = (tp.topic, tp.partition)
        offset = self.committed_offsets.get(key)
        if offset is None:
            [committed] = self.consumer.committed([tp], timeout=10)
            offset = self.committed_offsets[key] = int(committed.offset)
        return offset

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


_NOT_READY = (
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
)


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
