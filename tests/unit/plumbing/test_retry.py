"""The retry helper for admin and group calls: retriable errors waited out, others raised at once.

The errors are the client libraries' own exception classes, built as the libraries build them;
nothing talks to a broker here (the integration tests do).
"""

from __future__ import annotations

import logging
import time

import pytest
from confluent_kafka import KafkaError as RdKafkaError
from confluent_kafka import KafkaException
from kafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    GroupAuthorizationFailedError,
    NotCoordinatorError,
    SaslAuthenticationFailedError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)

from hubstream.retry import RETRY_SETTING, RetriesExhausted, is_retriable, retry_bound_s, retrying


def _failing_then(errors: list[BaseException], result: str) -> tuple[list[int], object]:
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return result

    return calls, call


def test_retriable_errors_are_waited_out_and_the_result_returned(caplog: pytest.LogCaptureFixture) -> None:
    calls, call = _failing_then(
        [CoordinatorNotAvailableError("cold"), CoordinatorLoadInProgressError("loading"),
         KafkaException(RdKafkaError(RdKafkaError.NOT_COORDINATOR))],
        "offsets",
    )
    caplog.set_level(logging.INFO, logger="hubstream.retry")
    started = time.monotonic()
    assert retrying("list_group_offsets(g1)", call, within_s=5, first_wait_s=0.001) == "offsets"  # type: ignore[arg-type]
    assert time.monotonic() - started < 0.5
    assert len(calls) == 4
    retries = [r for r in caplog.records if r.name == "hubstream.retry"]
    assert [r.levelno for r in retries] == [logging.INFO] * 3
    assert all("list_group_offsets(g1)" in r.getMessage() for r in retries)
    assert "CoordinatorNotAvailableError" in retries[0].getMessage()
    assert "CoordinatorLoadInProgressError" in retries[1].getMessage()
    assert "NOT_COORDINATOR" in retries[2].getMessage()


def test_a_non_retriable_error_is_raised_at_once() -> None:
    refused = GroupAuthorizationFailedError("no")
    calls, call = _failing_then([refused], "never")
    with pytest.raises(GroupAuthorizationFailedError) as caught:
        retrying("list_group_offsets(g2)", call, within_s=5, first_wait_s=0.001)  # type: ignore[arg-type]
    assert caught.value is refused
    assert len(calls) == 1


def test_an_error_of_another_kind_is_raised_at_once() -> None:
    calls, call = _failing_then([ValueError("bug")], "never")
    with pytest.raises(ValueError, match="bug"):
        retrying("describe", call, within_s=5, first_wait_s=0.001)  # type: ignore[arg-type]
    assert len(calls) == 1


def test_the_bound_spent_raises_an_error_naming_the_call_and_the_last_error() -> None:
    calls: list[int] = []

    def never() -> None:
        calls.append(1)
        raise CoordinatorNotAvailableError("still cold")

    started = time.monotonic()
    with pytest.raises(RetriesExhausted) as caught:
        retrying("list_group_offsets(g3)", never, within_s=0.05, first_wait_s=0.005)
    elapsed = time.monotonic() - started
    assert 0.05 <= elapsed < 0.3
    assert len(calls) >= 3  # backoff 5, 10, 20 ms, and once more at the bound
    message = str(caught.value)
    assert "list_group_offsets(g3)" in message
    assert "CoordinatorNotAvailableError" in message
    assert RETRY_SETTING in message
    assert isinstance(caught.value.__cause__, CoordinatorNotAvailableError)
    assert caught.value.attempts == len(calls)


def test_no_wait_runs_past_the_bound() -> None:
    def never() -> None:
        raise CoordinatorNotAvailableError("still cold")

    started = time.monotonic()
    with pytest.raises(RetriesExhausted):
        retrying("slow backoff", never, within_s=0.05, first_wait_s=10)
    assert time.monotonic() - started < 0.3


def test_the_bound_comes_from_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RETRY_SETTING, raising=False)
    assert retry_bound_s() == 60.0
    monkeypatch.setenv(RETRY_SETTING, "0.05")
    assert retry_bound_s() == 0.05

    def never() -> None:
        raise CoordinatorNotAvailableError("still cold")

    started = time.monotonic()
    with pytest.raises(RetriesExhausted):
        retrying("from the setting", never, first_wait_s=0.005)
    assert time.monotonic() - started < 0.3
    monkeypatch.setenv(RETRY_SETTING, "soon")
    with pytest.raises(ValueError, match=RETRY_SETTING):
        retry_bound_s()
    monkeypatch.setenv(RETRY_SETTING, "-1")
    with pytest.raises(ValueError, match=RETRY_SETTING):
        retry_bound_s()


@pytest.mark.parametrize(
    "error",
    [
        CoordinatorNotAvailableError("x"),
        NotCoordinatorError("x"),
        CoordinatorLoadInProgressError("x"),
        UnknownTopicOrPartitionError("x"),
        KafkaException(RdKafkaError(RdKafkaError._TRANSPORT)),
        KafkaException(RdKafkaError(RdKafkaError.COORDINATOR_NOT_AVAILABLE)),
        KafkaException(RdKafkaError(RdKafkaError.NOT_COORDINATOR)),
        KafkaException(RdKafkaError(RdKafkaError.COORDINATOR_LOAD_IN_PROGRESS)),
        KafkaException(RdKafkaError(RdKafkaError.LEADER_NOT_AVAILABLE)),
        KafkaException(RdKafkaError(RdKafkaError.NOT_LEADER_FOR_PARTITION)),
        KafkaException(RdKafkaError(RdKafkaError.UNKNOWN_TOPIC_OR_PART)),
        KafkaException(RdKafkaError(RdKafkaError._MSG_TIMED_OUT, retriable=True)),
    ],
    ids=repr,
)
def test_retriable(error: BaseException) -> None:
    assert is_retriable(error)


@pytest.mark.parametrize(
    "error",
    [
        GroupAuthorizationFailedError("x"),
        SaslAuthenticationFailedError("x"),
        TopicAlreadyExistsError("x"),
        ValueError("x"),
        TimeoutError("x"),
        KafkaException(RdKafkaError(RdKafkaError._AUTHENTICATION)),
        KafkaException(RdKafkaError(RdKafkaError.SASL_AUTHENTICATION_FAILED)),
        # librdkafka's own flag does not make a refusal worth waiting for
        KafkaException(RdKafkaError(RdKafkaError.GROUP_AUTHORIZATION_FAILED, retriable=True)),
        KafkaException(RdKafkaError(RdKafkaError.TOPIC_AUTHORIZATION_FAILED)),
        KafkaException(RdKafkaError(RdKafkaError.COORDINATOR_NOT_AVAILABLE, fatal=True)),
        KafkaException("no error object"),
    ],
    ids=repr,
)
def test_not_retriable(error: BaseException) -> None:
    assert not is_retriable(error)
