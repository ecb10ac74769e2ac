"""An exactly-once Kafka-to-PostgreSQL sink.

The consumed offsets are stored in the same database transaction as the rows they produce,
and on every (re)assignment the consumer seeks to the offsets the database holds. So a crash
at any point (before, during or after the transaction) replays exactly the uncommitted batch:
no row is lost and none is written twice. Kafka's own committed offsets are kept up to date
too, for lag monitoring only; they are never read back.

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
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
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
from schemas.domain import CHECKS

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


@dataclass
class _Batch:
    messages: list[Any]
    decoded: list[Decoded] = field(default_factory=list)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    rejected: int = 0


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
            "logger": log,
            **(consumer_config or {}),
        }
        self._consumer = Consumer(self._consumer_config)
        self._renewed_at: float | None = None
        self._conn: db.Connection | None = None  # used by one thread at a time, never two
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{store}-writer")
        self._in_flight: tuple[_Batch, Future[float]] | None = None

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
        """Write the batch's rows and offsets in one transaction; the time it committed."""
        with self._connection() as conn, conn.cursor() as cur:
            if batch.decoded:
                self.handler.write(cur, batch.decoded)
            execute_values(
                cur,
                f"INSERT INTO {self.handler.store}.consumer_offsets (group_id, topic, partition, next_offset)"
                " VALUES %s ON CONFLICT (group_id, topic, partition)"
                " DO UPDATE SET next_offset = EXCLUDED.next_offset",
                [(self.group_id, t, p, o) for (t, p), o in batch.next_offsets.items()],
            )
        return time.time()

    # -- positions ------------------------------------------------------------------------

    def _subscribe(self) -> None:
        self._consumer.subscribe(
            list(self.accepted), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
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
        self._settle(rewind=False)
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
            tp.offset = stored.get((tp.topic, tp.partition), OFFSET_BEGINNING)
        consumer.assign(partitions)
        log.info("%s: positioned %d partitions from the database", self.group_id, len(partitions))

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        self._rebalances += 1
        self._settle(rewind=False)

    def _rewind(self) -> None:
        """Back to the database's offsets, after a batch whose transaction did not commit."""
        stored = self._stored_offsets()
        for tp in self._consumer.assignment():
            offset = stored.get((tp.topic, tp.partition), OFFSET_BEGINNING)
            self._consumer.seek(TopicPartition(tp.topic, tp.partition, offset))

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
                    self._settle()
                    idle += 1
                    if idle_polls_before_stop is not None and idle >= idle_polls_before_stop:
                        break
                    continue
                idle = 0
                batch = self._prepare(messages)
                if self._settle():
                    self._in_flight = (batch, self._writer.submit(self._commit, batch))
        finally:
            try:
                self._settle(rewind=False)
            finally:
                self._writer.shutdown()
                self._consumer.close()
                self._drop_connection()
        return self.stats

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

    def _settle(self, *, rewind: bool = True) -> bool:
        """Wait for the batch in flight; False if its transaction failed (then, with ``rewind``,
        the consumer is back at the database's offsets)."""
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
        self.stats.rows += len(batch.decoded)
        self.stats.dead_letters += batch.rejected
        self.stats.batches += 1
        self._observe(batch, committed_at)
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
