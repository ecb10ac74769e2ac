"""An exactly-once Kafka-to-PostgreSQL sink.

The consumed offsets are stored in the same database transaction as the rows they produce,
and on every (re)assignment the consumer seeks to the offsets the database holds. So a crash
at any point (before, during or after the transaction) replays exactly the uncommitted batch:
no row is lost and none is written twice. Kafka's own committed offsets are kept up to date
too, for lag monitoring only; they are never read back.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg2
from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from psycopg2.extras import execute_values

import schemas
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

log = logging.getLogger(__name__)


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


class _Reassigned(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, pending: set[TopicPartition]) -> None:
        self.pending = pending

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.pending.difference_update(revoked)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.pending.update(assigned)


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
        connection: dict[str, Any],
        group_id: str,
        topics: dict[str, tuple[str, ...]],
        decode: Callable[[bytes], tuple[str, dict[str, Any]]],
        dead_letters: DeadLetterSink,
        batch_size: int = 1000,
        poll_timeout_ms: int = 500,
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
        self.poll_timeout_ms = poll_timeout_ms
        self.stats = SinkStats()
        # Series exist from the start at 0, so a first error shows as an increase.
        DB_ERRORS.labels(store=handler.store)
        for topic in topics:
            DEAD_LETTERS.labels(topic=topic, stage="decode")
        self._pending: set[TopicPartition] = set()
        self._consumer = KafkaConsumer(
            **connection,
            group_id=group_id,
            # Static membership: a consumer restarted after a crash takes its partitions straight
            # back instead of waiting out the dead member's session.
            group_instance_id=instance_id or f"{group_id}@{socket.gethostname()}",
            session_timeout_ms=10_000,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=batch_size,
            **(consumer_config or {}),
        )
        self._conn: db.Connection | None = None

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

    def _stored_offsets(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        with self._connection() as conn, conn.cursor() as cur:
            cur.execute(
                f"SELECT topic, partition, next_offset FROM {self.handler.store}.consumer_offsets"
                " WHERE group_id = %s",
                (self.group_id,),
            )
            stored = {TopicPartition(t, p): o for t, p, o in cur.fetchall()}
        return {tp: stored[tp] for tp in partitions if tp in stored}

    def _seek_to_stored(self, partitions: set[TopicPartition]) -> None:
        stored = self._stored_offsets(partitions)
        fresh = [tp for tp in partitions if tp not in stored]
        for tp, offset in stored.items():
            self._consumer.seek(tp, offset)
        if fresh:
            self._consumer.seek_to_beginning(*fresh)
        log.info("%s: positioned %d partitions from the database", self.group_id, len(partitions))

    def _commit(self, decoded: list[Decoded], next_offsets: dict[TopicPartition, int]) -> None:
        with self._connection() as conn, conn.cursor() as cur:
            if decoded:
                self.handler.write(cur, decoded)
            execute_values(
                cur,
                f"INSERT INTO {self.handler.store}.consumer_offsets (group_id, topic, partition, next_offset)"
                " VALUES %s ON CONFLICT (group_id, topic, partition)"
                " DO UPDATE SET next_offset = EXCLUDED.next_offset",
                [(self.group_id, tp.topic, tp.partition, o) for tp, o in next_offsets.items()],
            )

    # -- the loop -----------------------------------------------------------------------

    def run(
        self, should_stop: Callable[[], bool] = lambda: False, idle_polls_before_stop: int | None = None
    ) -> SinkStats:
        """Consume until ``should_stop()`` or, if given, that many empty polls in a row."""
        self._consumer.subscribe(list(self.accepted), listener=_Reassigned(self._pending))
        idle = 0
        try:
            while not should_stop():
                polled = self._consumer.poll(timeout_ms=self.poll_timeout_ms, max_records=self.batch_size)
                if self._pending:
                    # Records fetched from the default position before we could seek: discard them.
                    polled = {tp: recs for tp, recs in polled.items() if tp not in self._pending}
                    if not self._position_pending():
                        continue
                messages = [m for recs in polled.values() for m in recs]
                if not messages:
                    idle += 1
                    if idle_polls_before_stop is not None and idle >= idle_polls_before_stop:
                        break
                    continue
                idle = 0
                self._process(messages)
        finally:
            self._consumer.close(autocommit=False)
            self._drop_connection()
        return self.stats

    def _position_pending(self) -> bool:
        try:
            self._seek_to_stored(set(self._pending))
        except psycopg2.Error as exc:
            self._database_failed(exc)
            return False
        self._pending.clear()
        return True

    def _process(self, messages: list[Any]) -> None:
        decoded: list[Decoded] = []
        rejected = 0
        next_offsets: dict[TopicPartition, int] = {}
        for m in messages:
            next_offsets[TopicPartition(m.topic, m.partition)] = m.offset + 1
            try:
                schema, record = self.decode(m.value)
                if schema not in self.accepted[m.topic]:
                    raise SchemaViolation(
                        "", schema, f"topic {m.topic} carries {self.accepted[m.topic]} only"
                    )
                schemas.validate(schema, record)
            except (DecodeError, SchemaViolation) as exc:
                field = exc.field if isinstance(exc, SchemaViolation) else None
                self.dead_letters.send(
                    topic=m.topic, partition=m.partition, offset=m.offset, key=m.key, value=m.value,
                    reason=str(exc), field=field, stage="decode",
                )
                rejected += 1
                continue
            decoded.append(Decoded(m.topic, m.partition, m.offset, m.key, schema, record))
        if rejected:
            # Dead letters must be durable before the offsets that skip them are committed.
            self.dead_letters.flush()
        try:
            self._commit(decoded, next_offsets)
        except psycopg2.OperationalError as exc:
            self._database_failed(exc)
            self._pending.update(next_offsets)
            return
        except psycopg2.InterfaceError as exc:
            self._database_failed(exc)
            self._pending.update(next_offsets)
            return
        self.stats.rows += len(decoded)
        self.stats.dead_letters += rejected
        self.stats.batches += 1
        self._observe(messages, decoded, rejected)
        self._consumer.commit_async({tp: OffsetAndMetadata(o, "", -1) for tp, o in next_offsets.items()})

    def _observe(self, messages: list[Any], decoded: list[Decoded], rejected: int) -> None:
        store = self.handler.store
        ROWS_WRITTEN.labels(store=store).inc(len(decoded))
        BATCH_SIZE.labels(store=store).observe(len(messages))
        if rejected:
            DEAD_LETTERS.labels(topic=messages[0].topic, stage="decode").inc(rejected)
        now_ms = time.time() * 1000
        for d in decoded:
            EVENTS_IN.labels(topic=d.topic, schema=d.schema).inc()
        for m in messages:
            # Kafka's record timestamp is when the message was produced: publication to row.
            EVENT_TO_ROW_SECONDS.labels(store=store).observe(max(0.0, (now_ms - m.timestamp) / 1000))
        for tp in self._consumer.assignment():
            end = self._consumer.highwater(tp)
            if end is not None:
                behind = max(0, end - self._consumer.position(tp))
                labels = {"group": self.group_id, "topic": tp.topic, "partition": str(tp.partition)}
                CONSUMER_LAG.labels(**labels).set(behind)

    def _database_failed(self, exc: Exception) -> None:
        DB_ERRORS.labels(store=self.handler.store).inc()
        self.stats.db_errors += 1
        log.warning(
            "%s: database error, will reconnect and replay the batch: %s", self.group_id, str(exc).strip()
        )
        self._drop_connection()
        time.sleep(0.5)
