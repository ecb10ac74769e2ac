"""Publishing agency events: routing, keys, unwrapping lines, and what happens to bad lines."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import schemas
from hubstream import topics
from hubstream.protect import pseudonym
from hubstream.settings import Settings
from producers.publish import MAX_PROBLEMS_SHOWN, _unwrap, key_for, publish_lines, topic_for
from tests.support import events

T0 = datetime(2024, 3, 1, 21, 30, tzinfo=UTC)
PARTNER_AGENCY_TYPES = (
    "health", "social_care", "education", "youth_offending", "licensing", "hotel", "taxi", "voluntary",
)


def report(children: list[str], *, adults: list[str] = (), agency_type: str = "voluntary") -> dict[str, Any]:
    event = events.intelligence("r1", T0, children=children, adults=adults, agency_type=agency_type)
    return schemas.from_json("IntelligenceReport", event)


def episode_event(child: str = "pk_child", n: int = 0) -> dict[str, Any]:
    return events.missing(child, f"ep-{n}", "reported_missing", T0 + timedelta(days=n))


# -- routing and keys ---------------------------------------------------------------------------


def test_police_intelligence_goes_to_the_police_topic() -> None:
    routed = topic_for("IntelligenceReport", report(["pk_a"], agency_type="police"))
    assert routed == topics.POLICE_INTELLIGENCE


@pytest.mark.parametrize("agency_type", PARTNER_AGENCY_TYPES)
def test_every_partner_agency_type_goes_to_the_partner_topic(agency_type: str) -> None:
    routed = topic_for("IntelligenceReport", report(["pk_a"], agency_type=agency_type))
    assert routed == topics.PARTNER_INTELLIGENCE


def test_missing_episodes_and_hub_decisions_have_their_own_topics() -> None:
    missing = schemas.from_json("MissingEpisodeEvent", episode_event())
    decision = schemas.from_json("HubDecision", events.decision("pk_child", "case_opened", T0))
    assert topic_for("MissingEpisodeEvent", missing) == topics.MISSING_EPISODES
    assert topic_for("HubDecision", decision) == topics.HUB_DECISIONS


def test_alerts_are_not_published_by_agencies() -> None:
    with pytest.raises(schemas.SchemaViolation) as caught:
        topic_for("Alert", {})
    assert (caught.value.field, caught.value.value) == ("schema", "Alert")


def test_intelligence_is_keyed_by_the_first_child_at_risk_it_names() -> None:
    record = report(["pk_b", "pk_a"], adults=["pk_adult"])
    record["persons"].insert(0, record["persons"].pop())  # an adult named before the children
    assert key_for("IntelligenceReport", record) == pseudonym("pk_b").encode()


def test_intelligence_naming_no_child_is_keyed_by_its_event_id() -> None:
    record = report([], adults=["pk_adult"])
    assert key_for("IntelligenceReport", record) == pseudonym(record["event_id"]).encode()


def test_missing_episodes_and_decisions_are_keyed_by_the_child() -> None:
    missing = schemas.from_json("MissingEpisodeEvent", episode_event("pk_child_9"))
    decision = schemas.from_json("HubDecision", events.decision("pk_child_9", "case_closed", T0))
    expected = pseudonym("pk_child_9").encode()
    assert key_for("MissingEpisodeEvent", missing) == key_for("HubDecision", decision) == expected
    assert b"pk_child_9" not in key_for("HubDecision", decision)


# -- unwrapping lines ---------------------------------------------------------------------------


def test_a_bare_event_is_taken_as_the_kinds_schema() -> None:
    event = episode_event()
    assert _unwrap("missing-episode", event) == ("MissingEpisodeEvent", event)


def test_the_simulators_wrapper_is_unwrapped() -> None:
    event = episode_event()
    assert _unwrap("missing-episode", {"schema": "MissingEpisodeEvent", "event": event}) == (
        "MissingEpisodeEvent", event,
    )
    assert _unwrap("mixed", {"schema": "HubDecision", "event": {"x": 1}}) == ("HubDecision", {"x": 1})


def test_a_wrapper_with_the_wrong_schema_for_the_kind_names_the_schema_field() -> None:
    with pytest.raises(schemas.SchemaViolation) as caught:
        _unwrap("missing-episode", {"schema": "HubDecision", "event": {}})
    assert (caught.value.field, caught.value.value) == ("schema", "HubDecision")
    assert "MissingEpisodeEvent" in str(caught.value)


def test_an_unknown_schema_is_refused_even_for_mixed_lines() -> None:
    with pytest.raises(schemas.SchemaViolation) as caught:
        _unwrap("mixed", {"schema": "Gossip", "event": {}})
    assert (caught.value.field, caught.value.value) == ("schema", "Gossip")


@pytest.mark.parametrize("schema", ["Alert", "HealthCseFlag", "DeadLetter"])
def test_a_mixed_line_of_a_schema_agencies_do_not_publish_is_refused(schema: str) -> None:
    with pytest.raises(schemas.SchemaViolation) as caught:
        _unwrap("mixed", {"schema": schema, "event": {}})
    assert (caught.value.field, caught.value.value) == ("schema", schema)


@pytest.mark.parametrize("schema", [["HubDecision"], {"name": "HubDecision"}, None, 3])
def test_a_schema_that_is_not_a_name_is_refused_naming_schema(schema: Any) -> None:
    with pytest.raises(schemas.SchemaViolation) as caught:
        _unwrap("mixed", {"schema": schema, "event": {}})
    assert caught.value.field == "schema"


def test_mixed_lines_must_be_wrapped() -> None:
    with pytest.raises(schemas.SchemaViolation, match="mixed"):
        _unwrap("mixed", episode_event())


# -- publish_lines with a recording publisher -----------------------------------------------------


@dataclass(frozen=True)
class Sent:
    topic: str
    key: bytes
    schema: str
    event_id: str
    ref: str


@dataclass
class RecordingDeadLetters:
    sent: list[dict[str, Any]] = field(default_factory=list)

    def send(self, **letter: Any) -> None:
        self.sent.append(letter)


@dataclass
class RecordingPublisher:
    """Stands in for Publisher: validates and routes as it does, and records instead of sending.

    Events whose id is in ``undeliverable`` are accepted and then reported as not delivered,
    as the real producer's error callback would.
    """

    undeliverable: frozenset[str] = frozenset()
    sent: list[Sent] = field(default_factory=list)
    dead_letters: RecordingDeadLetters = field(default_factory=RecordingDeadLetters)
    delivery_failures: list[str] = field(default_factory=list)
    flushes: int = 0
    closed: bool = False

    def publish_json(self, schema: str, event: Any, *, topic: str | None = None, ref: str = "") -> str:
        record = schemas.from_json(schema, event)
        target = topic or topic_for(schema, record).name
        self.sent.append(Sent(target, key_for(schema, record), schema, record["event_id"], ref))
        if record["event_id"] in self.undeliverable:
            self.delivery_failures.append(f"{ref}: broker unavailable")
        return target

    def flush(self) -> None:
        self.flushes += 1

    def close(self) -> None:
        self.closed = True


def publish(kind: str, lines: list[str], publisher: RecordingPublisher | None = None, **kw: Any):
    pub = publisher or RecordingPublisher()
    return publish_lines(Settings(), kind, lines, progress=False, publisher=pub, **kw), pub


def line(obj: Any) -> str:
    return json.dumps(obj) + "\n"


def test_good_lines_are_forwarded_in_order_to_the_kinds_topic() -> None:
    lines = [line(episode_event("pk_a", 0)), line(episode_event("pk_b", 1))]
    result, pub = publish("missing-episode", lines)
    assert (result.published, result.rejected, result.problems) == (2, 0, [])
    assert [(s.topic, s.key, s.ref) for s in pub.sent] == [
        (topics.MISSING_EPISODES.name, pseudonym("pk_a").encode(), "line 1"),
        (topics.MISSING_EPISODES.name, pseudonym("pk_b").encode(), "line 2"),
    ]
    assert pub.dead_letters.sent == []
    assert pub.flushes == 1
    assert not pub.closed  # the caller's publisher is the caller's to close


def test_a_bad_line_is_counted_and_its_problem_names_line_field_and_value() -> None:
    bad = episode_event("pk_b", 1) | {"nhs_number": "123"}
    lines = [line(episode_event("pk_a")), line(bad), line(episode_event("pk_c", 2))]
    result, pub = publish("missing-episode", lines)
    assert (result.published, result.rejected) == (2, 1)
    [problem] = result.problems
    assert problem.startswith("line 2: nhs_number:")
    assert "'123'" in problem
    assert [s.key for s in pub.sent] == [pseudonym("pk_a").encode(), pseudonym("pk_c").encode()]


def test_a_bad_line_goes_to_the_dead_letter_topic_with_the_reason_and_field() -> None:
    bad = episode_event() | {"risk_level": "extreme"}
    raw = json.dumps(bad)
    result, pub = publish("missing-episode", [raw + "\n"])
    [letter] = pub.dead_letters.sent
    assert letter["topic"] == topics.MISSING_EPISODES.name
    assert (letter["field"], letter["stage"], letter["value"]) == ("risk_level", "validate", raw.encode())
    assert letter["reason"] == result.problems[0]
    assert (letter["partition"], letter["offset"], letter["key"]) == (None, None, None)


def test_a_line_that_is_not_json_is_rejected_with_its_line_number() -> None:
    result, pub = publish("missing-episode", ["{not json\n"])
    assert result.rejected == 1
    assert result.problems[0].startswith("line 1: <record>: line is not valid JSON")
    assert not pub.dead_letters.sent[0]["field"]  # the line as a whole, not one field


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "1e999"])
def test_a_number_json_cannot_hold_is_rejected_as_not_json(literal: str) -> None:
    # Python's json module reads these as floats; a location at NaN must never get as far as a check.
    raw = json.dumps(episode_event()).replace('"risk_level": "medium"', f'"risk_level": {literal}')
    assert literal in raw
    result, _ = publish("missing-episode", ["\n", raw + "\n"])
    assert result.rejected == 1
    assert result.problems[0].startswith("line 2: <record>: line is not valid JSON")


def test_blank_lines_are_skipped_but_still_numbered() -> None:
    result, pub = publish("missing-episode", ["\n", "   \n", line(episode_event())])
    assert (result.published, result.rejected) == (1, 0)
    assert pub.sent[0].ref == "line 3"


def test_mixed_lines_are_routed_per_event() -> None:
    lines = [
        line({"schema": "MissingEpisodeEvent", "event": episode_event("pk_a")}),
        line({"schema": "IntelligenceReport", "event": events.intelligence(
            "r1", T0, children=["pk_b"], agency_type="police")}),
        line({"schema": "HubDecision", "event": events.decision("pk_c", "case_opened", T0)}),
    ]
    result, pub = publish("mixed", lines)
    assert result.published == 3
    assert [(s.topic, s.key) for s in pub.sent] == [
        (topics.MISSING_EPISODES.name, pseudonym("pk_a").encode()),
        (topics.POLICE_INTELLIGENCE.name, pseudonym("pk_b").encode()),
        (topics.HUB_DECISIONS.name, pseudonym("pk_c").encode()),
    ]


def test_a_mixed_line_with_a_non_agency_schema_is_rejected_naming_schema() -> None:
    alert = {"schema": "Alert", "event": {"anything": 1}}
    result, pub = publish("mixed", [line(alert)])
    assert result.rejected == 1
    assert pub.dead_letters.sent[0]["field"] == "schema"
    # Mixed lines have no single topic: the dead letter says which kind of input they came from.
    assert pub.dead_letters.sent[0]["topic"] == "mixed"


def test_a_wrapped_line_of_the_wrong_schema_is_rejected_naming_schema() -> None:
    wrapped = {"schema": "HubDecision", "event": events.decision("pk_c", "case_opened", T0)}
    result, pub = publish("missing-episode", [line(wrapped)])
    assert result.rejected == 1
    assert result.problems[0].startswith("line 1: schema:")
    assert pub.sent == []


def test_a_topic_override_sends_every_line_there() -> None:
    result, pub = publish("missing-episode", [line(episode_event())], topic="replay.missing")
    assert result.published == 1
    assert pub.sent[0].topic == "replay.missing"


def test_undelivered_events_are_moved_from_published_to_rejected() -> None:
    good, lost = episode_event("pk_a", 0), episode_event("pk_b", 1)
    pub = RecordingPublisher(undeliverable=frozenset({lost["event_id"]}))
    result, _ = publish("missing-episode", [line(good), line(lost)], pub)
    assert (result.published, result.rejected) == (1, 1)
    assert result.problems == ["not delivered: line 2: broker unavailable"]


def test_an_unknown_kind_is_refused_before_anything_is_sent() -> None:
    with pytest.raises(ValueError, match="gossip"):
        publish("gossip", [line(episode_event())])


def test_problems_shown_are_capped_and_the_rest_counted() -> None:
    lines = ["{\n"] * (MAX_PROBLEMS_SHOWN + 5)
    result, pub = publish("missing-episode", lines)
    assert result.rejected == MAX_PROBLEMS_SHOWN + 5
    assert len(pub.dead_letters.sent) == MAX_PROBLEMS_SHOWN + 5  # nothing is lost
    assert len(result.problems) == MAX_PROBLEMS_SHOWN + 1
    assert result.problems[-1].startswith("... and 5 more")


@given(st.lists(st.booleans(), max_size=20))
def test_every_line_is_either_published_or_rejected(good_or_bad: list[bool]) -> None:
    lines = [line(episode_event(f"pk_{n}", n)) if good else "[]\n" for n, good in enumerate(good_or_bad)]
    result, pub = publish("missing-episode", lines)
    assert result.published == len(pub.sent) == sum(good_or_bad)
    assert result.rejected == len(pub.dead_letters.sent) == len(good_or_bad) - sum(good_or_bad)
    assert [int(p.split(":")[0].removeprefix("line ")) for p in result.problems] == [
        n + 1 for n, good in enumerate(good_or_bad) if not good
    ]
