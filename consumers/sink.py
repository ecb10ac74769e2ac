"""An exactly-once Kafka-to-PostgreSQL sink.

The consumed offsets are stored in the same database transaction as the rows they produce,
and on every (re)assignment the consumer seeks to the offsets the database holds. So a crash
at any point (before, during or after the transaction) replays exactly the uncommitted batch:
no row is lost and none is written twice. Kafka's own committed offsets are kept up to date
too, for lag monitoring only; they are never read back.

The offsets are written compare-and-set: the sink remembers, per partition, the next offset it
read from the database when positioned (or last wrote itself), and the transaction commits only
if the database still holds exactly that. Another instance of the sink that took the partitions
while this one was paused (a GC pause, a stopped VM) has moved them on; then this instance's
transaction is rolled back whole, it says so in its log, and it seeks back to the database's
offsets. The expected value is always the stored one, never the batch's first offset: offsets
have gaps (transaction markers, compaction). Partitions lost (a lapsed session) abort the batch
in flight rather than commit it.

The consumer is librdkafka's (confluent-kafka): it fetches and checks records in its own threads,
so this loop only decodes, validates and writes. A batch is whatever has arrived, up to
``batch_size``: a backlog drains in large transactions, and a message arriving alone is written
at once instead of waiting for a batch to fill.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import psycopg2
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from psycopg2.extras import execute_values

from consumers import db
from hubstream.metrics import (
    BATCH_SIZE,
    CONSUMER_LAG,
    DB_ERRORS,
    DEAD_LETTERS,
    EVENT_TO_ROW_SECONDS,
    EVENTS_IN,
    ROWS_WRITTEN,
)
from schemas import DecodeError, SchemaViolation
from schemas.domain import CHECKS, check_not_future

log = logging.getLogger(__name__)

# Errors no retry can cure: stop rather than spin.
_FATAL_CODES = frozenset(
    {
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
    }
)


RENEW_AGAIN_AFTER_S = 60.0


class _ConsumerFatal(Exception):
    """The consumer is unusable (librdkafka's fatal error), though the sink need not be."""

    def __init__(self, error: KafkaError) -> None:
        super().__init__(error.str())
        self.error = error


@dataclass(frozen=True)
class Decoded:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    schema: str
    record: dict[str, Any]


class Handler(Protocol):
    store: str  # the schema that holds this store's tables and consumer_offsets

    def write(self, cur: db.Cursor, batch: Sequence[Decoded]) -> None: ...


class DeadLetterSink(Protocol):
    def send(
        self, *, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
        reason: str, field: str | None, stage: str,
    ) -> None: ...

    def flush(self) -> None: ...


TopicPart = tuple[str, int]


class OffsetsMoved(Exception):
    """The database no longer holds the offsets this sink last read or wrote: another instance
    of the sink (the same group) has committed since. The transaction was rolled back."""

    def __init__(self, moved: dict[TopicPart, tuple[int | None, int | None]]) -> None:
        # partition: (the next offset expected, the one the database holds); (None, None) for a
        # partition this instance does not hold
        self.moved = moved
        super().__init__("; ".join(
            f"{t}[{p}] "
            + ("not held by this instance" if (e, f) == (None, None) else f"expected {e}, found {f}")
            for (t, p), (e, f) in sorted(moved.items())
        ))


class _Abandoned(Exception):
    """The partitions were lost while the batch was in flight; its transaction was rolled back."""


@dataclass
class _Batch:
    messages: list[Any]
    decoded: list[Decoded] = field(default_factory=list)
    next_offsets: dict[TopicPart, int] = field(default_factory=dict)
    rejected: int = 0
    # Set when the batch is sent: the next offsets the database must still hold (None: no row
    # yet), and the generation of the sink's partitions it was read under.
    expected: dict[TopicPart, int | None] = field(default_factory=dict)
    generation: int = 0


@dataclass
class SinkStats:
    rows: int = 0
    dead_letters: int = 0
    batches: int = 0
    db_errors: int = 0


class TransactionalSink:
    def __init__(
        self,
        *,
        handler: Handler,
        dsn: str,
        kafka_config: dict[str, Any],
        group_id: str,
        topics: dict[str, tuple[str, ...]],
        decode: Callable[[bytes], tuple[str, dict[str, Any]]],
        dead_letters: DeadLetterSink,
        batch_size: int = 5000,
        poll_timeout_s: float = 0.5,
        consumer_config: dict[str, Any] | None = None,
        instance_id: str | None = None,
    ) -> None:
        self.handler = handler
        self.dsn = dsn
        self.group_id = group_id
        self.accepted = topics
        self.decode = decode
        self.dead_letters = dead_letters
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.stats = SinkStats()
        store = handler.store
        # Series exist from the start at 0, so a first error shows as an increase.
        DB_ERRORS.labels(store=store)
        for topic in topics:
            DEAD_LETTERS.labels(topic=topic, stage="decode")
        self._rows_written = ROWS_WRITTEN.labels(store=store)
        self._batch_sizes = BATCH_SIZE.labels(store=store)
        self._event_to_row = EVENT_TO_ROW_SECONDS.labels(store=store)
        self._rebalances = 0
        self._consumer_config = {
            **kafka_config,
            "group.id": group_id,
            # Static membership: a consumer restarted after a crash takes its partitions straight
            # back instead of waiting out the dead member's session.
            "group.instance.id": instance_id or f"{group_id}@{socket.gethostname()}",
            "session.timeout.ms": 10_000,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            # Only committed records: the worker writes its outputs in Kafka transactions, and
            # an aborted one must never reach a store. (librdkafka's default; stated so it stays.)
            "isolation.level": "read_committed",
            "logger": log,
            **(consumer_config or {}),
        }
        self._consumer = Consumer(self._consumer_config)
        self._renewed_at: float | None = None
        self._conn: db.Connection | None = None  # used by one thread at a time, never two
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{store}-writer")
        self._in_flight: tuple[_Batch, Future[float]] | None = None
        # Per partition held, the next offset the database holds as far as this sink knows.
        self._expected: dict[TopicPart, int | None] = {}
        # Bumped when partitions are lost; a batch of an older generation must not commit.
        self._generation = 0
        self._commit_lock = threading.Lock()

    # -- database -----------------------------------------------------------------------

    def _connection(self) -> db.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = db.connect(self.dsn, attempts=1_000_000)
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg2.Error):
                self._conn.close()
        self._conn = None

    def _stored_offsets(self) -> dict[tuple[str, int], int]:
        """The database's offsets for this group, waiting out an unavailable database."""
        while True:
            try:
                with self._connection() as conn, conn.cursor() as cur:
                    cur.execute(
                        f"SELECT topic, partition, next_offset FROM {self.handler.store}.consumer_offsets"
                        " WHERE group_id = %s",
                        (self.group_id,),
                    )
                    return {(t, p): o for t, p, o in cur.fetchall()}
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                self._database_failed(exc)

    def _commit(self, batch: _Batch) -> float:
        """Write the batch's offsets and rows in one transaction; the time it committed.

        Raises OffsetsMoved (rolled back) if the database's offsets are not the expected ones,
        and _Abandoned (rolled back) if the partitions were lost meanwhile.
        """
        conn = self._connection()
        try:
            with conn.cursor() as cur:
                # The offsets first: a fenced instance writes nothing, and the row locks taken
                # here make a second instance's transaction wait, then find the offsets moved.
                self._compare_and_set_offsets(cur, batch)
                if batch.decoded:
                    self.handler.write(cur, batch.decoded)
            with self._commit_lock:
                if batch.generation != self._generation:
                    raise _Abandoned()
                conn.commit()
        except BaseException:
            with contextlib.suppress(psycopg2.Error):
                conn.rollback()
            raise
        return time.time()

    def _compare_and_set_offsets(self, cur: db.Cursor, batch: _Batch) -> None:
        store = self.handler.store
        moves = sorted(batch.next_offsets.items())
        # A partition this sink was never positioned on (or has since given up) is not its own.
        not_held: dict[TopicPart, tuple[int | None, int | None]] = {
            tp: (None, None) for tp, _ in moves if tp not in batch.expected
        }
        if not_held:
            raise OffsetsMoved(not_held)
        existing = [(self.group_id, t, p, batch.expected[t, p], o) for (t, p), o in moves
                    if batch.expected[t, p] is not None]
        new = [(self.group_id, t, p, o) for (t, p), o in moves if batch.expected[t, p] is None]
        done: set[TopicPart] = set()
        if existing:
            done.update((t, p) for t, p in execute_values(
                cur,
                f"UPDATE {store}.consumer_offsets AS o SET next_offset = v.next_offset"
                " FROM (VALUES %s) AS v (group_id, topic, partition, expected, next_offset)"
                " WHERE o.group_id = v.group_id AND o.topic = v.topic AND o.partition = v.partition"
                " AND o.next_offset = v.expected RETURNING o.topic, o.partition",
                existing, fetch=True,
            ))
        if new:
            done.update((t, p) for t, p in execute_values(
                cur,
                f"INSERT INTO {store}.consumer_offsets (group_id, topic, partition, next_offset) VALUES %s"
                " ON CONFLICT (group_id, topic, partition) DO NOTHING RETURNING topic, partition",
                new, fetch=True,
            ))
        if len(done) < len(moves):
            cur.execute(
                f"SELECT topic, partition, next_offset FROM {store}.consumer_offsets WHERE group_id = %s",
                (self.group_id,),
            )
            found = {(t, p): o for t, p, o in cur.fetchall()}
            raise OffsetsMoved(
                {tp: (batch.expected[tp], found.get(tp)) for tp, _ in moves if tp not in done}
            )

    # -- positions ------------------------------------------------------------------------

    def _subscribe(self) -> None:
        self._consumer.subscribe(
            list(self.accepted), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    def _renew(self, exc: _ConsumerFatal) -> None:
        """A fresh consumer after a fatal one, positioned from the database as at start-up.

        librdkafka gives up on a static member that the coordinator fenced, which happens when a
        stalled broker lets the member's session lapse: the sink would sit idle for good. Fenced
        again within a minute means another process holds the same group.instance.id; then stop.
        """
        now = time.monotonic()
        if self._renewed_at is not None and now - self._renewed_at < RENEW_AGAIN_AFTER_S:
            raise KafkaException(
                f"{self.group_id}: consumer failed again within {RENEW_AGAIN_AFTER_S:.0f} s of being "
                f"renewed ({exc.error.str()}); is another sink running with group.instance.id "
                f"{self._consumer_config['group.instance.id']!r}?"
            ) from None
        log.error("%s: consumer failed (%s); starting a new one from the database's offsets",
                  self.group_id, exc.error.str())
        # A failed consumer's partitions are gone (the coordinator may have handed them on).
        self._abandon()
        self._expected.clear()
        with contextlib.suppress(KafkaException, RuntimeError):
            self._consumer.close()
        self._renewed_at = now
        self._consumer = Consumer(self._consumer_config)
        self._subscribe()

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self._rebalances += 1
        self._settle(rewind=False)  # the offsets read next must include the batch in flight
        stored = self._stored_offsets()
        for tp in partitions:
            key = (tp.topic, tp.partition)
            self._expected[key] = stored.get(key)
            tp.offset = stored.get(key, OFFSET_BEGINNING)
        consumer.assign(partitions)
        log.info("%s: positioned %d partitions from the database", self.group_id, len(partitions))

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        # Revoked, the partitions are still this sink's until the callback returns: commit.
        self._rebalances += 1
        self._settle(rewind=False)
        for tp in partitions:
            self._expected.pop((tp.topic, tp.partition), None)

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        # Lost, the partitions may already be another instance's: commit nothing on their account.
        self._rebalances += 1
        log.warning("%s: %d partitions lost (session lapsed); aborting the batch in flight",
                    self.group_id, len(partitions))
        self._abandon()
        # Whoever is given these partitions next reads their offsets from the database; any
        # still held (cooperative assignment) go back to the database's offsets too, as the
        # batch in flight may have held some of their messages.
        lost = {(tp.topic, tp.partition) for tp in partitions}
        for key in lost:
            self._expected.pop(key, None)
        self._rewind(skip=lost)

    def _abandon(self) -> None:
        """Wait for the batch in flight and roll it back unless it had committed already
        (before the loss was known); no Kafka commit either way."""
        with self._commit_lock:  # a transaction committing now finishes first; none commits after
            self._generation += 1
        self._settle(rewind=False, kafka_commit=False)

    def _rewind(self, skip: frozenset[TopicPart] | set[TopicPart] = frozenset()) -> None:
        """Back to the database's offsets, after a batch whose transaction did not commit."""
        stored = self._stored_offsets()
        for tp in self._consumer.assignment():
            key = (tp.topic, tp.partition)
            if key in skip:
                continue
            self._expected[key] = stored.get(key)
            self._consumer.seek(TopicPartition(tp.topic, tp.partition, stored.get(key, OFFSET_BEGINNING)))

    # -- the loop -----------------------------------------------------------------------

    def run(
        self, should_stop: Callable[[], bool] = lambda: False, idle_polls_before_stop: int | None = None
    ) -> SinkStats:
        """Consume until ``should_stop()`` or, if given, that many empty polls in a row.

        One batch is written (in a thread of its own; psycopg2 lets go of the GIL while the
        server works) while the next is fetched and decoded. Only one is ever in flight, and
        each is settled before the next is sent, so a failed transaction is replayed from the
        database's offsets with nothing after it written.
        """
        self._subscribe()
        idle = 0
        try:
            while not should_stop():
                try:
                    messages = self._next_batch()
                except _ConsumerFatal as exc:
                    self._renew(exc)
                    continue
                if not messages:
                    if self._settle():
                        self._send(self._past_markers())
                    idle += 1
                    if idle_polls_before_stop is not None and idle >= idle_polls_before_stop:
                        break
                    continue
                idle = 0
                batch = self._prepare(messages)
                if self._settle():
                    self._send(batch)
        finally:
            try:
                self._settle(rewind=False)
            finally:
                self._writer.shutdown()
                self._consumer.close()
                self._drop_connection()
        return self.stats

    def _send(self, batch: _Batch) -> None:
        """Hand the batch to the writer, with the offsets the database must still hold."""
        if not batch.next_offsets:
            return
        expected = self._expected
        batch.expected = {tp: expected[tp] for tp in batch.next_offsets if tp in expected}
        batch.generation = self._generation
        self._in_flight = (batch, self._writer.submit(self._commit, batch))

    def _past_markers(self) -> _Batch:
        """Offsets alone, for the partitions whose position has moved past what the database
        holds with no message handed over: read committed, the transaction markers a topic
        ends in are skipped. Stored too, or the store would read one message behind for ever."""
        batch = _Batch([])
        assigned = self._consumer.assignment()
        if not assigned:
            return batch
        for tp in self._consumer.position(assigned):
            key = (tp.topic, tp.partition)
            if key in self._expected and tp.offset > (self._expected[key] or 0):
                batch.next_offsets[key] = tp.offset
        return batch

    def _next_batch(self) -> list[Any]:
        """Wait for one message, then take whatever else has already arrived, up to a batch."""
        first = self._consumer.poll(self.poll_timeout_s)
        if first is None:
            return []
        rebalances = self._rebalances
        rest = self._consumer.consume(self.batch_size - 1, timeout=0) if self.batch_size > 1 else []
        # A rebalance positions every partition from the database again (eager assignment), and
        # librdkafka drops what it fetched before; the one message already handed over is stale.
        batch = rest if self._rebalances != rebalances else [first, *rest]
        messages = []
        for m in batch:
            err = m.error()
            if err is None:
                messages.append(m)
            elif err.code() in _FATAL_CODES:
                raise KafkaException(err)
            elif err.fatal() or err.code() == KafkaError._FATAL:
                raise _ConsumerFatal(err)
            else:
                log.warning("%s: consumer error: %s", self.group_id, err)
        return messages

    def _prepare(self, messages: list[Any]) -> _Batch:
        batch = _Batch(messages)
        accepted = self.accepted
        decode = self.decode
        for m in messages:
            topic, partition, offset, value = m.topic(), m.partition(), m.offset(), m.value()
            batch.next_offsets[topic, partition] = offset + 1
            try:
                schema, record = decode(value)
                if schema not in accepted[topic]:
                    raise SchemaViolation("", schema, f"topic {topic} carries {accepted[topic]} only")
                # Avro decoding already gives the schema's structure; what is left are its rules.
                CHECKS[schema](record)
                if schema == "HubDecision":  # an agency's event: not after its publication
                    check_not_future(record, datetime.fromtimestamp(m.timestamp()[1] / 1000, UTC))
            except (DecodeError, SchemaViolation) as exc:
                bad_field = exc.field if isinstance(exc, SchemaViolation) else None
                self.dead_letters.send(
                    topic=topic, partition=partition, offset=offset, key=m.key(), value=value,
                    reason=str(exc), field=bad_field, stage="decode",
                )
                batch.rejected += 1
                continue
            batch.decoded.append(Decoded(topic, partition, offset, m.key(), schema, record))
        if batch.rejected:
            # Dead letters must be durable before the offsets that skip them are committed.
            self.dead_letters.flush()
        return batch

    def _settle(self, *, rewind: bool = True, kafka_commit: bool = True) -> bool:
        """Wait for the batch in flight; False if its transaction failed or was refused (then,
        with ``rewind``, the consumer is back at the database's offsets)."""
        if self._in_flight is None:
            return True
        batch, future = self._in_flight
        self._in_flight = None
        try:
            committed_at = future.result()
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            self._database_failed(exc)
            if rewind:
                self._rewind()
            return False
        except OffsetsMoved as exc:
            log.warning(
                "%s: fenced: another instance moved the offsets (%s); rolled back this batch of %d"
                " messages, no rows written; re-seeking from the database's offsets",
                self.group_id, exc, len(batch.messages),
            )
            if rewind:
                self._rewind()
            return False
        except _Abandoned:
            log.warning("%s: rolled back the batch of %d messages read before the partitions were lost",
                        self.group_id, len(batch.messages))
            return False
        for tp, offset in batch.next_offsets.items():
            if tp in self._expected:
                self._expected[tp] = offset
        if batch.messages:
            self.stats.rows += len(batch.decoded)
            self.stats.dead_letters += batch.rejected
            self.stats.batches += 1
            self._observe(batch, committed_at)
        self._observe_lag()
        if kafka_commit:
            with contextlib.suppress(KafkaException):  # for lag monitoring only; never read back
                self._consumer.commit(
                    offsets=[TopicPartition(t, p, o) for (t, p), o in batch.next_offsets.items()],
                    asynchronous=True,
                )
        return True

    def _observe(self, batch: _Batch, committed_at: float) -> None:
        messages = batch.messages
        self._rows_written.inc(len(batch.decoded))
        self._batch_sizes.observe(len(messages))
        if batch.rejected:
            DEAD_LETTERS.labels(topic=messages[0].topic(), stage="decode").inc(batch.rejected)
        for (topic, schema), n in collections.Counter((d.topic, d.schema) for d in batch.decoded).items():
            EVENTS_IN.labels(topic=topic, schema=schema).inc(n)
        now_ms = committed_at * 1000
        observe = self._event_to_row.observe
        for m in messages:
            # Kafka's record timestamp is when the message was produced: publication to row.
            observe(max(0.0, (now_ms - m.timestamp()[1]) / 1000))

    def _observe_lag(self) -> None:
        assigned = self._consumer.assignment()
        if not assigned:
            return
        for tp in self._consumer.position(assigned):
            _low, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0 and tp.offset >= 0:
                labels = {"group": self.group_id, "topic": tp.topic, "partition": str(tp.partition)}
                CONSUMER_LAG.labels(**labels).set(max(0, high - tp.offset))

    def _database_failed(self, exc: Exception) -> None:
        DB_ERRORS.labels(store=self.handler.store).inc()
        self.stats.db_errors += 1
        log.warning(
            "%s: database error, will reconnect and replay the batch: %s", self.group_id, str(exc).strip()
        )
        self._drop_connection()
        time.sleep(0.5)
