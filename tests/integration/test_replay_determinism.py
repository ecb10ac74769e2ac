"""Replaying the same history gives the same alert ids: from scratch twice, and with two workers."""

from __future__ import annotations

from datetime import date
from typing import Any

from hubstream import kafka
from hubstream.progress import wait_until
from hubstream.settings import Settings
from producers.simulate import simulate
from tests.integration.test_worker_end_to_end import alerts_on, publish
from tests.support.stack import Namespace, namespace, wait_for_worker

COUNTY = list(simulate(7, date(2025, 1, 1), 150, children=150))


def group_members(ns: Namespace, group: str) -> tuple[str, int]:
    admin = kafka.admin(ns.settings)
    try:
        info: dict[str, Any] = admin.describe_groups([group])[group]
    finally:
        admin.close()
    return str(info["group_state"]), len(info["members"])


def alert_ids_from_run(stack: Settings, workers: int) -> set[str]:
    with namespace(stack) as ns:
        group = f"{ns.prefix}hubstream-worker"
        for n in range(workers):
            ns.start_worker(name=f"worker{n}")
        if workers > 1:
            # The workers share the partitions before the history arrives. faust can stall
            # when a rebalance lands in the middle of a replay (a partition comes back and is
            # never resumed); see the closing note of the correlation issue.
            wait_until(
                lambda: group_members(ns, group) == ("Stable", workers),
                timeout_s=120, what=f"{workers} workers in a stable group", every_s=1.0,
            )
        publish(ns.settings, COUNTY)
        wait_for_worker(ns, group, timeout_s=240)
        return {str(a["alert_id"]) for a in alerts_on(ns)}


def test_same_history_twice_from_scratch_gives_identical_alert_ids(stack: Settings) -> None:
    first = alert_ids_from_run(stack, workers=1)
    second = alert_ids_from_run(stack, workers=1)
    assert len(first) > 20, "the simulated county should raise alerts of several kinds"
    assert first == second


def test_two_workers_give_the_same_alerts_as_one(stack: Settings) -> None:
    assert alert_ids_from_run(stack, workers=2) == alert_ids_from_run(stack, workers=1)
