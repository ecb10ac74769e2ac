"""Replaying the same history gives the same alert ids: from scratch twice, with a second worker
joining in the middle of the replay, with a worker killed mid-replay and restarted, and for one
rule replayed alone in a group of its own."""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable
from datetime import date

from hubstream import topics
from hubstream.progress import lag, wait_for_group, wait_until, worker_topics
from hubstream.settings import DEFAULT_ASSIGNOR, Settings
from producers.simulate import simulate
from tests.integration.test_worker_end_to_end import alerts_on, publish
from tests.support.stack import Namespace, namespace, wait_for_worker

COUNTY = list(simulate(7, date(2025, 1, 1), 150, children=150))


def alert_ids_from_run(
    stack: Settings, during: Callable[[Namespace], None] | None = None, assignor: str = DEFAULT_ASSIGNOR
) -> set[str]:
    """Alert ids after the county is replayed; ``during`` acts after the worker has committed
    part of the first half and before the second half is published, so inside the replay."""
    half = len(COUNTY) // 2
    with namespace(stack) as ns:
        group = f"{ns.prefix}hubstream-worker"
        publish(ns.settings, COUNTY[:half])
        # Small batches, each committed, so that ``during`` can land between two of them.
        ns.start_worker("--max-batch", "20", "--commit-interval", "0", "--assignor", assignor, name="worker0")
        if during is not None:
            wait_until(
                lambda: _progress(ns, group) > 0, timeout_s=120, what="a committed batch", every_s=0.05
            )
            during(ns)
        publish(ns.settings, COUNTY[half:])
        wait_for_worker(ns, group, timeout_s=240)
        return {str(a["alert_id"]) for a in alerts_on(ns)}


def _progress(ns: Namespace, group: str) -> int:
    """Input messages the group has committed."""
    names = worker_topics(group)[:4]  # the agency topics, not the re-keyed ones
    behind = lag(ns.settings, group, names)
    return 0 if behind is None else len(COUNTY) // 2 - behind


def test_same_history_twice_from_scratch_gives_identical_alert_ids(stack: Settings) -> None:
    first = alert_ids_from_run(stack)
    second = alert_ids_from_run(stack)
    assert len(first) > 20, "the simulated county should raise alerts of several kinds"
    assert first == second


def test_a_worker_joining_mid_replay_changes_no_alert(stack: Settings) -> None:
    def second_worker(ns: Namespace) -> None:
        ns.start_worker(name="worker1")

    assert alert_ids_from_run(stack, second_worker) == alert_ids_from_run(stack)


def test_a_worker_joining_mid_replay_with_the_range_assignor_changes_no_alert(stack: Settings) -> None:
    # Range revokes every partition at the rebalance: both workers read all their state back.
    def second_worker(ns: Namespace) -> None:
        ns.start_worker("--assignor", "range", name="worker1")

    assert alert_ids_from_run(stack, second_worker, assignor="range") == alert_ids_from_run(stack)


def test_a_worker_killed_mid_replay_and_restarted_changes_no_alert(stack: Settings) -> None:
    def kill_and_restart(ns: Namespace) -> None:
        killed = ns.processes[0]
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
        ns.processes.remove(killed)
        ns.start_worker(name="worker-restarted")

    assert alert_ids_from_run(stack, kill_and_restart) == alert_ids_from_run(stack)


def test_one_rule_replayed_alone_raises_exactly_its_alerts_of_a_full_run(stack: Settings) -> None:
    with namespace(stack) as ns:
        publish(ns.settings, COUNTY)
        ns.start_worker(name="worker-all")
        wait_for_worker(ns, f"{ns.prefix}hubstream-worker", timeout_s=240)
        full = Counter(str(a["alert_id"]) for a in alerts_on(ns))
        repeat_missing = {str(a["alert_id"]) for a in alerts_on(ns) if a["rule"] == "repeat_missing"}

        replay = f"{ns.prefix}hubstream-worker-replay"
        ns.start_worker("--rules", "repeat_missing", name="worker-replay", app_id=replay)
        missing = [t for t in worker_topics(replay) if t.endswith(topics.MISSING_EPISODES.base_name)]
        wait_for_group(ns.settings, replay, missing, timeout_s=240)
        again = Counter(str(a["alert_id"]) for a in alerts_on(ns)) - full

    assert len(repeat_missing) > 5, "the simulated county should raise repeat-missing alerts"
    assert again == Counter(repeat_missing), "the replay raises each repeat-missing alert once, nothing else"
