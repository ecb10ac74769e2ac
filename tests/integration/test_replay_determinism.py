"""Replaying the same history gives the same alert ids: from scratch twice, and with two workers."""

from __future__ import annotations

from datetime import date

from hubstream.settings import Settings
from producers.simulate import simulate
from tests.integration.test_worker_end_to_end import alerts_on, publish
from tests.support.stack import namespace, wait_for_worker

COUNTY = list(simulate(7, date(2025, 1, 1), 150, children=150))


def alert_ids_from_run(stack: Settings, workers: int) -> set[str]:
    with namespace(stack) as ns:
        publish(ns.settings, COUNTY)
        for n in range(workers):
            ns.start_worker(name=f"worker{n}")
        wait_for_worker(ns, f"{ns.prefix}hubstream-worker", timeout_s=240)
        return {str(a["alert_id"]) for a in alerts_on(ns)}


def test_same_history_twice_from_scratch_gives_identical_alert_ids(stack: Settings) -> None:
    first = alert_ids_from_run(stack, workers=1)
    second = alert_ids_from_run(stack, workers=1)
    assert len(first) > 20, "the simulated county should raise alerts of several kinds"
    assert first == second


def test_two_workers_give_the_same_alerts_as_one(stack: Settings) -> None:
    assert alert_ids_from_run(stack, workers=2) == alert_ids_from_run(stack, workers=1)
