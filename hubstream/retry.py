"""Admin and group calls that wait out a broker still starting its coordinators.

A broker creates its group coordinator (the ``__consumer_offsets`` topic) and its transaction
coordinator (``__transaction_state``) on first use; until their partitions have leaders, group
and transaction calls answer COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR or
COORDINATOR_LOAD_IN_PROGRESS, and a topic just created can answer UNKNOWN_TOPIC_OR_PARTITION or
LEADER_NOT_AVAILABLE for a moment. :func:`retrying` runs such a call again, with backoff, while
its error is one the client library calls retriable, for at most ``HUBSTREAM_KAFKA_RETRY_SECONDS``
(60) in all, then raises :class:`RetriesExhausted` naming the call. Authorization and
authentication failures, and errors of any other kind, are raised at once.

Both client libraries are understood: kafka-python's ``KafkaError`` (its ``retriable`` class
attribute) and confluent-kafka's ``KafkaException`` (the ``KafkaError`` it carries:
``retriable()``, else one of the codes in :data:`RDKAFKA_RETRIABLE`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TypeVar

import confluent_kafka
import kafka.errors

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_SETTING = "HUBSTREAM_KAFKA_RETRY_SECONDS"
DEFAULT_RETRY_S = 60.0

_RD = confluent_kafka.KafkaError
# librdkafka marks few errors retriable itself; these are the ones a starting broker answers.
RDKAFKA_RETRIABLE = frozenset({
    _RD._TRANSPORT,
    _RD._TIMED_OUT,
    _RD._WAIT_COORD,
    _RD.COORDINATOR_NOT_AVAILABLE,
    _RD.NOT_COORDINATOR,
    _RD.COORDINATOR_LOAD_IN_PROGRESS,
    _RD.LEADER_NOT_AVAILABLE,
    _RD.NOT_LEADER_FOR_PARTITION,
    _RD.UNKNOWN_TOPIC_OR_PART,
    _RD.REQUEST_TIMED_OUT,
    _RD.NOT_CONTROLLER,
})
# A refusal is never waited out, whatever the library says of it.
RDKAFKA_REFUSED = frozenset({
    _RD._AUTHENTICATION,
    _RD.SASL_AUTHENTICATION_FAILED,
    _RD.TOPIC_AUTHORIZATION_FAILED,
    _RD.GROUP_AUTHORIZATION_FAILED,
    _RD.CLUSTER_AUTHORIZATION_FAILED,
    _RD.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
    _RD.DELEGATION_TOKEN_AUTHORIZATION_FAILED,
})
_KAFKA_PYTHON_REFUSED = (kafka.errors.AuthorizationError, kafka.errors.SaslAuthenticationFailedError)


class RetriesExhausted(RuntimeError):
    """A call still failed with a retriable error when the retry bound was spent."""

    def __init__(self, what: str, attempts: int, bound_s: float, last: BaseException) -> None:
        super().__init__(
            f"{what} still failing after {attempts} attempts in {bound_s:g}s "
            f"({RETRY_SETTING} sets the bound): {describe(last)}"
        )
        self.what = what
        self.attempts = attempts
        self.last = last


def retry_bound_s() -> float:
    """Seconds a call may spend retrying in all: HUBSTREAM_KAFKA_RETRY_SECONDS, else 60."""
    raw = os.environ.get(RETRY_SETTING, "")
    if raw == "":
        return DEFAULT_RETRY_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also refuses nan
        raise ValueError(f"setting {RETRY_SETTING} must be a number of seconds, 0 or more, got {raw!r}")
    return value


def is_retriable(exc: BaseException) -> bool:
    """Whether ``exc`` is a Kafka error worth trying the call again for."""
    if isinstance(exc, kafka.errors.KafkaError):
        return not isinstance(exc, _KAFKA_PYTHON_REFUSED) and bool(exc.retriable)
    if isinstance(exc, confluent_kafka.KafkaException):
        error = exc.args[0] if exc.args else None
        if not isinstance(error, confluent_kafka.KafkaError):
            return False
        if error.fatal() or error.code() in RDKAFKA_REFUSED:
            return False
        return bool(error.retriable()) or error.code() in RDKAFKA_RETRIABLE
    return False


def describe(exc: BaseException) -> str:
    text, name = str(exc), type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}"


def retrying(
    what: str,
    call: Callable[[], T],
    *,
    within_s: float | None = None,
    first_wait_s: float = 0.1,
    most_wait_s: float = 2.0,
) -> T:
    """Return ``call()``, calling it again while it raises a retriable Kafka error.

    Waits ``first_wait_s`` after the first failure, doubling up to ``most_wait_s``, never past
    the bound (``within_s``, else :func:`retry_bound_s`); each retry is logged at INFO with the
    error. Once the bound is spent the last error is raised inside :class:`RetriesExhausted`,
    whose message names ``what``. A non-retriable error is raised at once, as it is.
    """
    bound = retry_bound_s() if within_s is None else within_s
    started = time.monotonic()
    wait = first_wait_s
    attempts = 0
    while True:
        attempts += 1
        try:
            return call()
        except Exception as exc:
            if not is_retriable(exc):
                raise
            left = bound - (time.monotonic() - started)
            if left <= 0:
                raise RetriesExhausted(what, attempts, bound, exc) from exc
            pause = min(wait, left)
            log.info("%s: %s; retrying in %.2fs (%.1fs of %gs left)", what, describe(exc), pause, left, bound)
            time.sleep(pause)
            wait = min(wait * 2, most_wait_s)
