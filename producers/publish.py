"""Publishing events: validate every line against its schema, route it to its topic, key it.

Keys keep everything about one child in order: missing episodes and hub decisions are keyed by
the child's pseudonymous key, intelligence by the first child it names (else its own event id).
Bad lines never reach an event topic: they go to the dead-letter topic with the reason.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Protocol

import msgspec
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import Producer as ConfluentProducer
from tqdm import tqdm  # tqdm ships no type information

import schemas
from hubstream import kafka, topics
from hubstream.deadletter import REASON_MAX_CHARS, bounded, dead_letter_key, encode_dead_letter
from hubstream.protect import encrypt_narrative, pseudonym
from hubstream.serde import Serde, serde_for
from hubstream.settings import Settings
from schemas.domain import check_not_future
from schemas.jsonl import EVENT_KEY, SCHEMA_KEY

KINDS: dict[str, tuple[str, topics.Topic | None]] = {
    "police-intelligence": ("IntelligenceReport", topics.POLICE_INTELLIGENCE),
    "partner-intelligence": ("IntelligenceReport", topics.PARTNER_INTELLIGENCE),
    "missing-episode": ("MissingEpisodeEvent", topics.MISSING_EPISODES),
    "hub-decision": ("HubDecision", topics.HUB_DECISIONS),
    "mixed": ("", None),
}
# A tuple, not a set: a line's "schema" may be any JSON value, lists included.
AGENCY_SCHEMAS = tuple(dict.fromkeys(schema for schema, _ in KINDS.values() if schema))
MAX_PROBLEMS_SHOWN = 1000
log = logging.getLogger(__name__)
_INTELLIGENCE_TOPICS = (topics.POLICE_INTELLIGENCE.name, topics.PARTNER_INTELLIGENCE.name)


def topic_for(schema: str, record: dict[str, Any]) -> topics.Topic:
    if schema == "IntelligenceReport":
        police = record["agency_type"] == "police"
        return topics.POLICE_INTELLIGENCE if police else topics.PARTNER_INTELLIGENCE
    if schema == "MissingEpisodeEvent":
        return topics.MISSING_EPISODES
    if schema == "HubDecision":
        return topics.HUB_DECISIONS
    raise schemas.SchemaViolation(SCHEMA_KEY, schema, "only agency events are published here")


def key_for(schema: str, record: dict[str, Any]) -> bytes:
    """The record key: a keyed hash of the child (so one child's events stay in order on one
    partition) that shows no identifier on the broker, in logs or to partition tooling."""
    return pseudonym(_subject(schema, record)).encode()


def _subject(schema: str, record: dict[str, Any]) -> str:
    """Whom the key stands for: the first child at risk a report names (else the report itself),
    or the event's child."""
    if schema == "IntelligenceReport":
        for person in record["persons"]:
            if person["role"] == "child_at_risk":
                return str(person["person_key"])
        return str(record["event_id"])
    return str(record["person_key"])


def protect_fields(schema: str, record: dict[str, Any]) -> dict[str, Any]:
    """Encrypt what must be unreadable on broker disks: the intelligence narrative."""
    if schema == "IntelligenceReport":
        return {**record, "narrative": encrypt_narrative(record["narrative"])}
    return record


def principal_for(schema: str, record: dict[str, Any]) -> str:
    """The Kafka principal an event is published as: its agency's own."""
    if schema == "IntelligenceReport":
        agency = str(record["agency_type"])
        return "police" if agency == "police" else "partner-" + agency.replace("_", "-")
    if schema == "HubDecision":
        return "hub"
    return "police"  # missing episodes: the police missing-person units


class DeliveryError(RuntimeError):
    """Kafka refused or lost something the publisher had to deliver; the message names what."""


class MessageTooLarge(ValueError):
    """An event whose message would be over its topic's limit: refused before sending."""

    def __init__(self, topic: str, size: int, limit: int) -> None:
        self.topic = topic
        self.size = size
        self.limit = limit
        super().__init__(
            f"too large to publish: a message of {size:,} bytes; topic {topic} takes at most {limit:,} bytes"
        )


class Producer(Protocol):
    """What the publisher uses of a confluent-kafka Producer, so a test can hand it a fake."""

    def produce(
        self, topic: str, value: bytes, key: bytes | None = ..., *, on_delivery: Any = ...
    ) -> None: ...

    def poll(self, timeout: float = ...) -> int: ...

    def flush(self, timeout: float = ...) -> int: ...


# Delivery reports are served (and the local queue drained) every this many sends.
POLL_EVERY = 1000
# librdkafka's send queue, per producer: ample for a whole file, so sends rarely wait for room.
QUEUE_MESSAGES = 500_000
QUEUE_KBYTES = 1024 * 1024
# Publishing as each agency, every agency has its own producer, whose queue drains at its own
# pace: one agency's events can reach a shared partition far behind another's, and a worker
# would find them late. So each time event time moves on this far, the publisher waits until
# every producer has delivered what it was given before the previous step: no agency is more
# than two steps behind another, and the producers are never left with nothing to send.
REPLAY_STEP = timedelta(days=1)
# Pseudonyms are cached per subject; a subject named again (most are) costs a dict lookup.
MAX_CACHED_KEYS = 1_000_000


def producer_config(settings: Settings, principal: str) -> dict[str, Any]:
    """librdkafka settings for publishing as ``principal``: acks from every in-sync replica and
    idempotence (so retries neither duplicate nor reorder a partition), and Java's murmur2
    partitioner, the one kafka-python, faust and the Java clients use, so a child's key lands on
    the same partition whichever client wrote its earlier events."""
    return kafka.librdkafka_config(
        settings,
        principal,
        **{
            "acks": "all",
            "enable.idempotence": True,
            "partitioner": "murmur2_random",
            "linger.ms": 20,
            "compression.type": "none",
            "queue.buffering.max.messages": QUEUE_MESSAGES,
            "queue.buffering.max.kbytes": QUEUE_KBYTES,
            # librdkafka's own default (1,000,000) is below what the topics take.
            "message.max.bytes": topics.MESSAGE_MAX_BYTES,
        },
    )


class Publisher:
    """Validates and sends agency events. Use as a context manager, or call close().

    With ``principal`` every event goes as that one agency (a real agency's system). Without,
    each event goes as its own agency's principal: for simulations and replays run by a process
    that holds every agency's credentials.

    Sends are asynchronous (librdkafka batches them); each one's delivery report is checked.
    ``flush()`` returns once every send so far is acknowledged by the broker or has failed: an
    event that failed is in ``delivery_failures`` (named by ``ref`` or its event id), and a dead
    letter that failed raises DeliveryError, since a rejected line must not vanish.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        principal: str | None = None,
        producer: Producer | None = None,
        serde: Serde | None = None,
    ) -> None:
        self.settings = settings
        self.principal = principal
        self._producers: dict[str, Producer] = {}
        self._fixed = producer
        self.serde = serde or serde_for(settings)
        self.delivery_failures: list[str] = []
        self.dead_letter_failures: list[str] = []
        self.unconfirmed = 0  # sent, no delivery report yet
        self._sends = 0
        self._keys: dict[str, bytes] = {}
        self._fatal: str | None = None
        self._step_from: datetime | None = None  # event time at which this step began
        self._steps = [_Unconfirmed(), _Unconfirmed()]  # sends of the previous step and of this one
        self.dead_letters = PublisherDeadLetters(self, principal or "police")

    def _producer_for(self, principal: str) -> Producer:
        if self._fixed is not None:
            return self._fixed
        producer = self._producers.get(principal)
        if producer is None:
            config = producer_config(self.settings, principal)
            config["error_cb"] = self._client_error
            producer = self._producers[principal] = ConfluentProducer(config)
        return producer

    def publish(self, schema: str, record: dict[str, Any], *, topic: str | None = None, ref: str = "") -> str:
        """Validate and send one record-form event; returns the topic it went to."""
        return self._send(schema, schemas.validate(schema, record), topic, ref)

    def publish_json(self, schema: str, event: Any, *, topic: str | None = None, ref: str = "") -> str:
        # from_json checks the structure and the domain rules as it converts: no second validate.
        return self._send(schema, schemas.from_json(schema, event), topic, ref)

    def _send(self, schema: str, record: dict[str, Any], topic: str | None, ref: str) -> str:
        check_not_future(record, datetime.now(UTC))  # the worker checks it again on the record's timestamp
        routed = topic_for(schema, record).name
        if topic in _INTELLIGENCE_TOPICS and routed != topic:
            raise schemas.SchemaViolation(
                "agency_type",
                record["agency_type"],
                f"reports of this agency type go to {routed}, not {topic}",
            )
        target = topic or routed
        if self.principal is None:
            self._keep_agencies_in_step(record["occurred_at"])
        value = self.serde.encode(target, schema, protect_fields(schema, record))
        key = self._key_for(schema, record)
        if len(key) + len(value) > topics.MAX_KEY_AND_VALUE_BYTES:
            # The broker would refuse it, and the refusal would only come back as a delivery
            # report: refused here, it can be dead-lettered like any other bad line.
            raise MessageTooLarge(target, len(key) + len(value), topics.MAX_KEY_AND_VALUE_BYTES)
        producer = self._producer_for(self.principal or principal_for(schema, record))
        name = ref or str(record["event_id"])
        step = self._steps[-1]
        step.sends += 1
        report = partial(self._delivered, name, step)
        self.produce(producer, target, key, value, report)
        return target

    def _key_for(self, schema: str, record: dict[str, Any]) -> bytes:
        subject = _subject(schema, record)
        key = self._keys.get(subject)
        if key is None:
            if len(self._keys) >= MAX_CACHED_KEYS:
                self._keys.clear()
            key = self._keys[subject] = pseudonym(subject).encode()
        return key

    def produce(
        self,
        producer: Producer,
        topic: str,
        key: bytes | None,
        value: bytes,
        report: Callable[[Any, Any], None],
    ) -> None:
        """Queue one message; ``report(error, message)`` is called with its delivery report."""
        if self._fatal is not None:
            raise DeliveryError(self._fatal)
        self.unconfirmed += 1
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=report)
                break
            except BufferError:  # the local queue is full: wait for the broker to take some
                producer.poll(0.05)
            except KafkaException as exc:  # refused before queueing (say, no WRITE on the topic)
                report(exc.args[0], _Refused(topic))
                break
        self._sends += 1
        if self._sends % POLL_EVERY == 0:
            self._serve_reports()

    def _serve_reports(self) -> None:
        """Run the delivery reports that have come, without waiting."""
        for producer in self._all():
            producer.poll(0)

    def _delivered(self, name: str, step: _Unconfirmed, error: Any, message: Any) -> None:
        self.unconfirmed -= 1
        step.sends -= 1
        if error is not None:
            self.delivery_failures.append(f"{name}: {error.str()} (topic {message.topic()})")

    def _dead_letter_delivered(self, name: str, error: Any, message: Any) -> None:
        self.unconfirmed -= 1
        if error is not None:
            self.dead_letter_failures.append(f"dead letter for {name}: {error.str()}")

    def _client_error(self, error: Any) -> None:
        # Connection troubles are retried by librdkafka and surface as failed deliveries if they
        # last; only fatal errors (say, idempotence lost) and refused credentials stop at once.
        if error.fatal() or error.code() == KafkaError._AUTHENTICATION:
            self._fatal = f"Kafka client error: {error.str()}"

    def _keep_agencies_in_step(self, occurred_at: datetime) -> None:
        if self._step_from is None:
            self._step_from = occurred_at
        elif occurred_at - self._step_from >= REPLAY_STEP:
            previous = self._steps[0]
            self._serve_reports()
            while previous.sends > 0:
                self._check_fatal()
                time.sleep(0.002)
                self._serve_reports()
            self._steps = [self._steps[1], _Unconfirmed()]
            self._step_from = occurred_at

    def _check_fatal(self) -> None:
        if self._fatal is not None:
            raise DeliveryError(f"{self._fatal}; {self.unconfirmed} sends unconfirmed")

    def flush(self) -> None:
        """Wait until every send so far has its delivery report; raise when one cannot come."""
        for producer in self._all():
            while producer.flush(1.0) > 0:
                self._check_fatal()
        if self.unconfirmed:
            raise DeliveryError(f"{self.unconfirmed} sends have no delivery report after flush")
        if self.dead_letter_failures:
            shown = "; ".join(self.dead_letter_failures[:10])
            raise DeliveryError(f"{len(self.dead_letter_failures)} dead letters not delivered: {shown}")

    def close(self) -> None:
        self.flush()

    def _all(self) -> list[Producer]:
        return [self._fixed] if self._fixed is not None else list(self._producers.values())

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class _Unconfirmed:
    sends: int = 0


@dataclass(frozen=True)
class _Refused:
    """Stands in for the message in the report of a send librdkafka refused outright."""

    name: str

    def topic(self) -> str:
        return self.name


class PublisherDeadLetters:
    """Rejected lines to the dead-letter topic, through the publisher's producer, delivery checked."""

    def __init__(self, publisher: Publisher, principal: str) -> None:
        self.publisher = publisher
        self.principal = principal
        self.sent = 0

    def send(
        self, *, topic: str, partition: int | None, offset: int | None, key: bytes | None,
        value: bytes | None, reason: str, field: str | None, stage: str,
    ) -> None:
        pub = self.publisher
        data = encode_dead_letter(
            pub.serde, topic=topic, partition=partition, offset=offset, key=key, value=value,
            reason=reason, field=field, stage=stage,
        )
        name = reason.split(":", 1)[0]
        report = partial(pub._dead_letter_delivered, name)
        pub.produce(
            pub._producer_for(self.principal), topics.DEAD_LETTERS.name, dead_letter_key(key), data, report
        )
        self.sent += 1
        log.info("dead letter from %s (%s): %s", topic, stage, reason)


class DeadLetterTarget(Protocol):
    def send(
        self, *, topic: str, partition: int | None, offset: int | None, key: bytes | None,
        value: bytes | None, reason: str, field: str | None, stage: str,
    ) -> None: ...


class LinePublisher(Protocol):
    """What publish_lines uses of a Publisher, so a test can hand it a fake that records."""

    delivery_failures: list[str]

    @property
    def dead_letters(self) -> DeadLetterTarget: ...

    def publish_json(self, schema: str, event: Any, *, topic: str | None = None, ref: str = "") -> str: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class PublishResult:
    published: int = 0
    rejected: int = 0
    problems: list[str] = field(default_factory=list)


# A third of json.loads' time per line; refuses NaN, Infinity and numbers out of range too.
_parse_json = msgspec.json.Decoder().decode


def _shown(raw: bytes) -> str:
    """The start of a line, for a message: readable whatever bytes it holds."""
    return raw.strip()[:60].decode("utf-8", "backslashreplace")


def _parse_line(raw: bytes) -> Any:
    """The line's JSON value; SchemaViolation (of the line as a whole) when it has none."""
    try:
        return _parse_json(raw)
    except UnicodeDecodeError:
        # msgspec counts from the start of the string it was reading; say where in the line.
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            where = f"byte 0x{raw[exc.start]:02x} at offset {exc.start:,}: {exc.reason}"
        else:  # pragma: no cover - msgspec and Python agree on what UTF-8 is
            where = "a string is not UTF-8"
        raise schemas.SchemaViolation("", _shown(raw), f"line is not valid UTF-8 ({where})") from None
    except RecursionError:
        raise schemas.SchemaViolation("", _shown(raw), "line is not valid JSON (nested too deeply)") from None
    except ValueError as exc:  # msgspec's DecodeError
        raise schemas.SchemaViolation("", _shown(raw), f"line is not valid JSON ({exc})") from None


def _line_bytes(line: bytes | str) -> bytes:
    """A line as its bytes, without its newline. Text read with surrogateescape (Python's way
    with undecodable input on some locales) gets its original bytes back."""
    if isinstance(line, bytes):
        return line.rstrip(b"\n")
    try:
        raw = line.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that stands for no byte
        raw = line.encode("utf-8", "surrogatepass")
    return raw.rstrip(b"\n")


def _unwrap(kind: str, obj: Any) -> tuple[str, Any]:
    """A line is the bare event, or the simulator's {"schema": ..., "event": ...} wrapper."""
    expected, _ = KINDS[kind]
    if isinstance(obj, dict) and set(obj) == {SCHEMA_KEY, EVENT_KEY}:
        schema = obj[SCHEMA_KEY]
        if schema not in AGENCY_SCHEMAS or (expected and schema != expected):
            wanted = expected or "an agency event schema"
            raise schemas.SchemaViolation(SCHEMA_KEY, schema, f"expected {wanted} for kind {kind!r}")
        return schema, obj[EVENT_KEY]
    if not expected:
        raise schemas.SchemaViolation(
            "", obj, 'kind "mixed" needs lines of the form {"schema": ..., "event": ...}'
        )
    return expected, obj


def publish_lines(
    settings: Settings,
    kind: str,
    lines: Iterable[bytes | str],
    *,
    topic: str | None = None,
    progress: bool | None = None,
    publisher: LinePublisher | None = None,
    principal: str | None = None,
) -> PublishResult:
    if kind not in KINDS:
        raise ValueError(f"event kind must be one of {', '.join(KINDS)}, got {kind!r}")
    _, fixed_topic = KINDS[kind]
    target = topic or (fixed_topic.name if fixed_topic else None)
    result = PublishResult()
    show = sys.stderr.isatty() if progress is None else progress
    own = publisher is None
    pub: LinePublisher = publisher or Publisher(settings, principal=principal)
    try:
        for number, line in enumerate(
            tqdm(lines, unit=" events", disable=not show, file=sys.stderr), start=1
        ):
            raw = _line_bytes(line)
            if not raw.strip():
                continue
            field_name: str | None = None
            stage = "validate"
            try:
                schema, event = _unwrap(kind, _parse_line(raw))
                pub.publish_json(schema, event, topic=target, ref=f"line {number}")
                result.published += 1
                continue
            except (DeliveryError, schemas.RegistryError):
                raise  # not the line's fault: the publish stops
            except MessageTooLarge as exc:
                stage = "publish"
                reason = (
                    f"line {number}: too large to publish: the line is {len(raw):,} bytes and its "
                    f"message {exc.size:,} bytes; topic {exc.topic} takes at most {exc.limit:,} bytes"
                )
            except schemas.SchemaViolation as exc:
                field_name = exc.field
                reason = f"line {number}: {exc}"
            except RecursionError:  # a value nested deeper than the checks go
                reason = f"line {number}: <record>: nested too deeply to check (got {_shown(raw)!r})"
            except Exception as exc:  # whatever a line does, it is reported, not raised
                log.debug("line %d could not be checked", number, exc_info=True)
                reason = f"line {number}: could not be checked: {type(exc).__name__}: {exc}"
            reason = bounded(reason, REASON_MAX_CHARS)
            result.rejected += 1
            if len(result.problems) < MAX_PROBLEMS_SHOWN:
                result.problems.append(reason)
            pub.dead_letters.send(
                topic=target or kind, partition=None, offset=None, key=None,
                value=raw, reason=reason, field=field_name, stage=stage,
            )
        pub.flush()
    finally:
        if own:
            pub.close()
    if pub.delivery_failures:
        result.published -= len(pub.delivery_failures)
        result.rejected += len(pub.delivery_failures)
        result.problems.extend(f"not delivered: {f}" for f in pub.delivery_failures[:MAX_PROBLEMS_SHOWN])
    if result.rejected > len(result.problems):
        result.problems.append(
            f"... and {result.rejected - len(result.problems)} more (see the dead-letter topic)"
        )
    return result
