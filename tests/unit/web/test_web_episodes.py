"""A child's missing episodes as the child page shows them: the return interview's due time and
where it stands, from the agencies' events in any order."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from web.store import episodes

T0 = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)


def event(episode: str, kind: str, hours: float, area: str = "E06000016", **detail: Any) -> dict[str, Any]:
    return {
        "source": "missing_episode",
        "episode_id": episode,
        "kind": kind,
        "authority": area,
        "occurred_at": T0 + timedelta(hours=hours),
        "detail": detail,
    }


def hours_of(area: str) -> int:
    return {"E06000016": 72, "E06000017": 48}.get(area, 72)


def test_each_episode_gets_its_due_time_and_status() -> None:
    evidence = [
        event("a", "reported_missing", 0, risk_level="high", missing_from="care"),
        event("a", "found_or_returned", 10),
        event("a", "return_interview", 30, interview_outcome="completed"),
        event("b", "reported_missing", 100),
        event("b", "found_or_returned", 110),
        event("c", "reported_missing", 200, area="E06000017"),
        event("c", "found_or_returned", 210, area="E06000017"),
        event("d", "reported_missing", 300),
        {
            "source": "intelligence",
            "episode_id": None,
            "kind": "intelligence_report",
            "authority": "E06000016",
            "occurred_at": T0,
            "detail": {},
        },
    ]
    random.Random(3).shuffle(evidence)
    now = T0 + timedelta(hours=240)
    by_id = {ep["episode_id"]: ep for ep in episodes(evidence, hours_of, now)}
    assert [ep["episode_id"] for ep in episodes(evidence, hours_of, now)] == ["d", "c", "b", "a"]
    assert (by_id["a"]["interview_status"], by_id["a"]["due_at"]) == ("completed", T0 + timedelta(hours=82))
    assert (by_id["a"]["risk_level"], by_id["a"]["missing_from"]) == ("high", "care")
    assert by_id["b"]["interview_status"] == "overdue"  # due at 182 h, now 240 h
    assert (by_id["c"]["interview_status"], by_id["c"]["due_at"]) == (
        "due",
        T0 + timedelta(hours=258),
    )  # 48 h
    assert (by_id["d"]["interview_status"], by_id["d"]["due_at"]) == ("still missing", None)


def test_a_declined_interview_and_a_second_return_keep_the_first_return() -> None:
    evidence = [
        event("a", "reported_missing", 0),
        event("a", "found_or_returned", 5),
        event("a", "found_or_returned", 8),
        event("a", "return_interview", 20, interview_outcome="declined"),
    ]
    [ep] = episodes(evidence, hours_of, T0 + timedelta(days=30))
    assert (ep["returned_at"], ep["interview_status"]) == (T0 + timedelta(hours=5), "declined")
