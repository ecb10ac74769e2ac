"""A consumer group nobody has used yet: its lag and the wait for it answer at once.

The broker creates its group coordinator (``__consumer_offsets``) and its transaction
coordinator (``__transaction_state``) on first use. On a broker that has never held a group the
first group lookup answered COORDINATOR_NOT_AVAILABLE, and ``make demo`` failed on a fresh
machine. The shared broker these tests run on is warm, so they cannot reproduce the cold
coordinator (and must not restart the broker to get one): they check that a brand-new group id
and the coordinator warm-up answer right away on the real broker. The retry path itself is
covered by tests/unit/plumbing/test_retry.py.
"""

from __future__ import annotations

import time
from uuid import uuid4

from hubstream import kafka, progress, topics
from hubstream.settings import Settings
from tests.support.stack import Namespace


def test_a_brand_new_groups_lag_and_wait_answer_at_once(ns: Namespace) -> None:
    written, empty = ns.topic(topics.MISSING_EPISODES), ns.topic(topics.HUB_DECISIONS)
    producer = kafka.producer(ns.settings, "admin")
    try:
        for i in range(5):
            producer.send(written, key=f"k{i}".encode(), value=b"x")
        producer.flush(10)
    finally:
        producer.close()
    group = f"{ns.prefix}hubstream-never-used-{uuid4().hex[:8]}"

    started = time.monotonic()
    assert progress.lag(ns.settings, group, [written, empty]) == 5  # nothing committed: all of it
    assert progress.lag(ns.settings, group, [empty]) == 0
    progress.wait_for_group(ns.settings, group, [empty], timeout_s=30)
    # two clear rounds two seconds apart, and no time spent waiting for a coordinator
    assert time.monotonic() - started < 15


def test_the_coordinator_warm_up_answers_on_the_real_broker(stack: Settings) -> None:
    started = time.monotonic()
    kafka.warm_coordinators(stack)
    kafka.warm_coordinators(stack)  # idempotent: the throwaway ids leave nothing behind to trip on
    assert time.monotonic() - started < 15
