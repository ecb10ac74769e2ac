"""Knowing when a pipeline stage has caught up: consumer-group offsets against end offsets."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

from kafka import TopicPartition

from hubstream import kafka, topics
from hubstream.retry import retrying
from hubstream.settings import Settings

WORKER_INPUTS = (
    topics.MISSING_EPISODES, topics.POLICE_INTELLIGENCE, topics.PARTNER_INTELLIGENCE, topics.HUB_DECISIONS
)
WORKER_INTERNAL = ("hotspot-observations", "association-links")


def wait_until(condition: Callable[[], bool], *, timeout_s: float, what: str, every_s: float = 0.5) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(every_s)


def lag(settings: Settings, group: str, topic_names: list[str]) -> int | None:
    """Messages the group has not committed yet on these topics; None if one is not there yet.

    A group nobody has used yet has committed nothing: all of it. The calls wait out a broker
    whose group coordinator is still starting (:func:`hubstream.retry.retrying`).
    """
    admin = kafka.admin(settings)
    consumer = kafka.consumer(settings)
    try:
        offsets = retrying(f"list_group_offsets({group!r})", lambda: admin.list_group_offsets(group))
        committed = offsets.get(group, {})
        wanted: list[TopicPartition] = []
        for name in topic_names:
            partitions = retrying(
                f"partitions_for_topic({name!r})", partial(consumer.partitions_for_topic, name)
            )
            if not partitions:
                return None
            wanted += [TopicPartition(name, p) for p in partitions]
        end = retrying(
            f"end_offsets of {', '.join(topic_names)}", lambda: consumer.end_offsets(wanted)
        )
        behind: int = sum(max(0, end[tp] - (committed[tp].offset if tp in committed else 0)) for tp in wanted)
        return behind
    finally:
        consumer.close()
        admin.close()


def worker_topics(group: str) -> list[str]:
    """Every topic the worker group consumes: the agency topics and its own re-keyed topics."""
    return [t.name for t in WORKER_INPUTS] + [f"{group}-{suffix}" for suffix in WORKER_INTERNAL]


def wait_for_group(settings: Settings, group: str, topic_names: list[str], *, timeout_s: float,
                   on_lag: Callable[[int], None] | None = None,
                   still_running: Callable[[], None] | None = None) -> None:
    """Wait until the group has no lag twice in a row, two seconds apart.

    Twice, because a stage that feeds itself (the worker's re-keyed topics) can still be
    writing the last batch when its inputs already read as drained. ``still_running`` is
    called on every round and should raise when the process being waited for has died.
    """
    deadline = time.monotonic() + timeout_s
    clear = 0
    while clear < 2:
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s}s waiting for group {group} to catch up")
        if still_running is not None:
            still_running()
        behind = lag(settings, group, topic_names)
        if on_lag is not None and behind is not None:
            on_lag(behind)
        clear = clear + 1 if behind == 0 else 0
        time.sleep(2.0 if behind == 0 else 0.5)
