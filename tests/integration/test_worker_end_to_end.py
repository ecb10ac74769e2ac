"""Events published, the real worker running over the real broker: the expected alerts and only those."""

from __future__ import annotations

import io
import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hubstream import topics
from hubstream.settings import Settings
from producers.publish import publish_lines
from tests.support.events import intelligence, located, missing
from tests.support.reference import reference_alerts
from tests.support.stack import Namespace, decoded, wait_for_worker

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
T0 = datetime(2026, 2, 1, 18, 0, tzinfo=UTC)
HOTEL = (52.7721, -1.2062)


def county_story() -> list[tuple[str, dict[str, object]]]:
    m, i = "MissingEpisodeEvent", "IntelligenceReport"
    story = [
        # pk_a: three episodes in 20 days -> repeat missing on the third.
        (m, missing("pk_a", "a1", "reported_missing", T0)),
        (m, missing("pk_a", "a2", "reported_missing", T0 + 10 * DAY)),
        (m, missing("pk_a", "a3", "reported_missing", T0 + 20 * DAY)),
        # pk_b: returned, never interviewed; a later episode moves event time past 72 hours.
        (m, missing("pk_b", "b1", "reported_missing", T0)),
        (m, missing("pk_b", "b1", "found_or_returned", T0 + DAY)),
        (m, missing("pk_b", "b2", "reported_missing", T0 + 10 * DAY)),
        # pk_c: interviewed within 72 hours -> nothing.
        (m, missing("pk_c", "c1", "reported_missing", T0 + 2 * DAY)),
        (m, missing("pk_c", "c1", "found_or_returned", T0 + 3 * DAY)),
        (m, missing("pk_c", "c1", "return_interview", T0 + 4 * DAY)),
        (m, missing("pk_c", "c2", "reported_missing", T0 + 12 * DAY)),
    ]
    # pk_x, an adult of concern, with three different children -> association.
    story += [
        (i, intelligence(f"x{n}", T0 + n * DAY, children=[f"pk_x{n}"], adults=["pk_x"])) for n in range(3)
    ]
    # Five reports from two agencies about two children at one hotel -> hotspot.
    story += [
        (
            i,
            intelligence(
                f"h{n}",
                T0 + (5 + n) * DAY,
                children=[f"pk_h{n % 2}"],
                where=HOTEL,
                agency=("Charnwood Youth Project", "Leicestershire Police")[n % 2],
                agency_type=("voluntary", "police")[n % 2],
                grading=None
                if n % 2 == 0
                else {
                    "source_evaluation": "B",
                    "intelligence_assessment": 2,
                    "handling_code": "P",
                    "handling_conditions": None,
                },
            ),
        )
        for n in range(5)
    ]
    # pk_d: interviewed within 72 hours (an hour before the deadline), but the interview reaches
    # the hub five and a half hours late, behind reports of thirty other children from four hours past the
    # deadline. One of those shares pk_d's partition (and so its watermark) unless all thirty
    # miss it, (5/6)^30 = 0.4%. The timer waits out_of_order_hours (6) past a deadline, so this
    # disorder must raise no overdue alert: the rules, per child and in order, raise none.
    deadline = T0 + 14 * DAY + 72 * HOUR
    story += [
        (m, missing("pk_d", "d1", "reported_missing", T0 + 13 * DAY)),
        (m, missing("pk_d", "d1", "found_or_returned", T0 + 14 * DAY)),
        (m, missing("pk_d", "d1", "return_interview", deadline - HOUR)),
    ]
    story += [(m, missing(f"pk_by{n}", f"by{n}", "reported_missing", deadline + 4 * HOUR)) for n in range(30)]
    late = {story[-31][1]["event_id"]}
    return sorted(story, key=lambda item: _arrives(item[1], late))


def _arrives(event: dict[str, object], late: set[object]) -> datetime:
    """When an event reaches the hub: when it occurred, or 5.5 hours after for those ``late``."""
    at = datetime.fromisoformat(str(event["occurred_at"]))
    return at + 5.5 * HOUR if event["event_id"] in late else at


def publish(settings: Settings, events: list[tuple[str, dict[str, object]]]) -> None:
    lines = io.StringIO("".join(json.dumps({"schema": s, "event": e}) + "\n" for s, e in events))
    result = publish_lines(settings, "mixed", lines, progress=False)
    assert (result.published, result.rejected) == (len(events), 0), result.problems


def alerts_on(ns: Namespace) -> list[dict[str, object]]:
    return [record for _, record in decoded(ns.settings, ns.topic(topics.ALERTS))]


def test_worker_raises_exactly_the_alerts_the_rules_define(ns: Namespace) -> None:
    story = county_story()
    publish(ns.settings, story)
    ns.start_worker()
    wait_for_worker(ns, f"{ns.prefix}hubstream-worker")

    alerts = alerts_on(ns)
    ids = [a["alert_id"] for a in alerts]
    expected = {a.alert_id for a in reference_alerts(story)}
    assert set(ids) == expected
    kinds = Counter((a["rule"], a["subject"]) for a in alerts if a["rule"] != "hotspot")
    assert kinds == Counter(
        {
            ("repeat_missing", "pk_a"): 1,
            ("return_interview_overdue", "pk_b"): 1,
            ("association", "adult:pk_x"): 1,
        }
    )
    assert any(a["rule"] == "hotspot" for a in alerts)
    assert not any(a["subject"] in ("pk_c", "pk_d") for a in alerts)
    # Police get the same alerts on their own topic.
    police = {r["alert_id"] for _, r in decoded(ns.settings, ns.topic(topics.POLICE_ALERTS))}
    assert police == set(ids)


def test_silent_sources_do_not_stop_hotspot_state_from_moving_on(ns: Namespace) -> None:
    """Missing episodes over 100 days, and one intelligence report on the first day: most
    intelligence partitions never have an event, and one has one and falls silent. The worker
    reports all of those sources idle (the silent one once it has been silent for 30 s with
    nothing left to read), so hotspot cells get a watermark from the missing episodes alone: a
    located event far older than the rest is refused as late instead of being held for ever."""
    children = [f"pk_s{n}" for n in range(24)]  # spread over every missing-episode partition
    story = [
        ("MissingEpisodeEvent", missing(child, f"{child}-{day}", "reported_missing", T0 + day * DAY,
                                        last_seen=located(*HOTEL)))
        for day in range(0, 100, 5) for child in children
    ]
    story.insert(0, ("IntelligenceReport", intelligence("quiet", T0, children=["pk_s0"])))
    publish(ns.settings, story)
    ns.start_worker()
    group = f"{ns.prefix}hubstream-worker"
    wait_for_worker(ns, group)
    time.sleep(42)  # marks: every 5 s; idle after 5 s with no event, or 30 s silent
    latest = ("MissingEpisodeEvent", missing("pk_new", "n1", "reported_missing", T0 + 101 * DAY,
                                              last_seen=located(*HOTEL)))
    late = ("MissingEpisodeEvent", missing("pk_late", "l1", "reported_missing", T0 + 10 * DAY,
                                            last_seen=located(*HOTEL)))
    publish(ns.settings, [latest])
    wait_for_worker(ns, group)
    publish(ns.settings, [late])
    wait_for_worker(ns, group)

    dead = [record for _, record in decoded(ns.settings, ns.topic(topics.DEAD_LETTERS))]
    assert dead, "the late observation should have been refused by the hotspot cells"
    assert all("late" in str(d["reason"]) and d["stage"] == "process" for d in dead), dead
    assert {d["original_topic"] for d in dead} == {f"{group}-hotspot-observations"}


def test_a_busy_cells_state_beyond_a_megabyte_is_written_and_read_back(ns: Namespace) -> None:
    """A hotspot cell holds every located observation of its window: at a busy place that is
    megabytes of state, more than Kafka's default message limit, written to the changelog a day
    at a time. A restarted worker must read every part back and join them, or the worker stops
    for good."""
    story = [
        ("MissingEpisodeEvent", missing(f"pk_busy{n % 400}", f"busy{n}", "reported_missing",
                                        T0 + timedelta(minutes=5 * n), last_seen=located(*HOTEL)))
        for n in range(6000)
    ]
    publish(ns.settings, story)
    first = ns.start_worker(name="worker-busy")
    group = f"{ns.prefix}hubstream-worker"
    wait_for_worker(ns, group, timeout_s=240)
    ns.stop_all()
    assert first.returncode == 0

    ns.start_worker(name="worker-busy-restarted")
    publish(ns.settings, story[:1])  # a duplicate: handled against the restored state
    wait_for_worker(ns, group, timeout_s=240)
    log = (Path(ns.env["HUBSTREAM_HOME"]) / "test-logs" / f"{ns.prefix}worker-busy-restarted.log").read_text()
    restored = [line for line in log.splitlines() if "-hotspot-changelog[" in line and "restored" in line]
    assert restored, "the restarted worker should have read the hotspot changelog back"
    keys = sum(int(line.split("]: ")[1].split(" keys")[0]) for line in restored)
    assert keys >= 1, restored  # the hotel's cells, joined from their parts
