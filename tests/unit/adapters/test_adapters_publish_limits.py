"""The publisher refuses what the broker would refuse, and no input line raises out of it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import schemas
from hubstream import topics
from hubstream.deadletter import TRUNCATED_VALUE_BYTES
from hubstream.serde import Serde
from hubstream.settings import Settings
from producers.publish import Publisher, PublishResult, producer_config, publish_lines
from tests.support import events

T0 = datetime(2024, 3, 1, 21, 30, tzinfo=UTC)


@dataclass
class Delivered:
    def topic(self) -> str:
        return "t"


@dataclass
class FakeProducer:
    """Takes everything and acknowledges it on the next poll or flush."""

    sent: list[tuple[str, bytes | None, bytes]] = field(default_factory=list)
    pending: list[Callable[[Any, Any], None]] = field(default_factory=list)

    def produce(self, topic: str, value: bytes, key: bytes | None = None, *, on_delivery: Any = None) -> None:
        self.sent.append((topic, key, value))
        self.pending.append(on_delivery)

    def poll(self, timeout: float = 0) -> int:
        return self.flush(timeout)

    def flush(self, timeout: float = -1) -> int:
        pending, self.pending = self.pending, []
        for report in pending:
            report(None, Delivered())
        return 0


def run(kind: str, lines: Sequence[bytes | str]) -> tuple[PublishResult, FakeProducer, Publisher]:
    fake = FakeProducer()
    pub = Publisher(Settings(), producer=fake, serde=Serde(schemas.InMemoryRegistry()))
    return publish_lines(Settings(), kind, lines, progress=False, publisher=pub), fake, pub


def report_line(narrative: str) -> bytes:
    event = events.intelligence("r1", T0, children=["pk_a"], agency_type="police")
    return json.dumps({**event, "narrative": narrative}).encode() + b"\n"


def letters(fake: FakeProducer, pub: Publisher) -> list[dict[str, Any]]:
    return [pub.serde.decode(v)[1] for t, _, v in fake.sent if t == topics.DEAD_LETTERS.name]


def sent_to(fake: FakeProducer, topic: topics.Topic) -> list[bytes]:
    return [v for t, _, v in fake.sent if t == topic.name]


def test_the_producer_accepts_what_the_topics_accept() -> None:
    # librdkafka's own default (1,000,000 bytes) would refuse messages the topics take.
    assert producer_config(Settings(), "police")["message.max.bytes"] == topics.MESSAGE_MAX_BYTES


def test_a_line_too_large_for_its_topic_is_refused_before_sending_and_dead_lettered() -> None:
    big = report_line("x" * 3_000_000)
    result, fake, pub = run("police-intelligence", [report_line("small"), big, report_line("small too")])
    assert (result.published, result.rejected) == (2, 1)
    [problem] = result.problems
    assert problem.startswith("line 2: ")
    assert f"{len(big) - 1:,} bytes" in problem  # the line, without its newline
    assert f"{topics.MAX_KEY_AND_VALUE_BYTES:,} bytes" in problem
    assert topics.POLICE_INTELLIGENCE.name in problem
    assert all(len(v) <= topics.MAX_KEY_AND_VALUE_BYTES for v in sent_to(fake, topics.POLICE_INTELLIGENCE))
    assert len(sent_to(fake, topics.POLICE_INTELLIGENCE)) == 2
    [letter] = letters(fake, pub)
    assert (letter["stage"], letter["field"], letter["reason"]) == ("publish", None, problem)
    assert letter["original_topic"] == topics.POLICE_INTELLIGENCE.name
    assert letter["original_size"] == len(big) - 1
    assert letter["original_sha256"] == hashlib.sha256(big[:-1]).hexdigest()
    assert letter["value"] == big[:TRUNCATED_VALUE_BYTES]


def test_the_message_is_measured_not_the_line() -> None:
    # 800,000 characters of narrative fit as a JSON line, but not once encrypted (base64: 4/3).
    line = report_line("y" * 800_000)
    assert len(line) < topics.MAX_KEY_AND_VALUE_BYTES
    result, fake, pub = run("police-intelligence", [line])
    assert result.rejected == 1
    assert "too large" in result.problems[0]
    [letter] = letters(fake, pub)
    assert letter["stage"] == "publish"
    assert letter["value"] == line[:-1] and letter["original_size"] is None  # fits whole


def test_a_line_just_under_the_limit_is_published() -> None:
    result, fake, _ = run("police-intelligence", [report_line("z" * 700_000)])
    assert (result.published, result.rejected) == (1, 0)
    [value] = sent_to(fake, topics.POLICE_INTELLIGENCE)
    assert 900_000 < len(value) <= topics.MAX_KEY_AND_VALUE_BYTES


NESTED = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (bytes(b for b in range(256) if b != 10), "line is not valid JSON"),
        (b'{"narrative": "caf\xe9"}', "line is not valid UTF-8"),
        (b"\xef\xbb\xbf" + json.dumps(events.missing("pk", "e", "reported_missing", T0)).encode(),
         "line is not valid JSON"),
        (b"[1, 2, 3]", "expected an object"),
        (b'"' + b"z" * 5_000_000 + b'"', "expected an object"),
        (NESTED, "nested too deeply"),
        (b'{"event_id": ' + b"[" * 500 + b"]" * 500 + b"}", "event_id"),
        (b"{" + b'"a": {' * 50_000 + b"}" * 50_001, "nested too deeply"),
        (b"1e999", "line is not valid JSON"),
        (b"null", "expected an object"),
    ],
)
@pytest.mark.parametrize("as_text", [False, True])
def test_any_line_is_rejected_with_a_reason_not_an_exception(
    raw: bytes, expected: str, as_text: bool
) -> None:
    # Lines come as bytes from the CLI; as text (surrogate-escaped, as Python reads a pipe
    # in some locales) from other callers.
    line: bytes | str = raw + b"\n"
    if as_text:
        line = (raw + b"\n").decode("utf-8", "surrogateescape")
    result, fake, pub = run("missing-episode", [line])
    assert (result.published, result.rejected) == (0, 1)
    [problem] = result.problems
    assert problem.startswith("line 1: ")
    assert expected in problem
    assert len(problem) < 5000
    [letter] = letters(fake, pub)
    assert letter["stage"] == "validate"
    assert raw.startswith(letter["value"])
    assert letter["value"] == raw or letter["original_size"] == len(raw)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
KEYS = ("event_id", "episode_id", "kind", "occurred_at", "reported_at", "person_key", "schema", "event")


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["missing-episode", "police-intelligence", "hub-decision", "mixed"]),
    values=st.lists(
        st.binary(max_size=40)
        | JSON.map(lambda v: json.dumps(v).encode())
        | st.dictionaries(st.sampled_from(KEYS), JSON, max_size=6).map(lambda v: json.dumps(v).encode())
        | st.fixed_dictionaries({"schema": st.sampled_from(["MissingEpisodeEvent", "Alert", "x"]),
                                 "event": JSON}).map(lambda v: json.dumps(v).encode()),
        max_size=5,
    ),
)
def test_no_line_raises_and_every_line_is_published_or_dead_lettered(kind: str, values: list[bytes]) -> None:
    lines = [v.replace(b"\n", b" ") + b"\n" for v in values]
    result, fake, pub = run(kind, lines)
    assert result.published + result.rejected == sum(1 for v in lines if v.strip())
    assert len(letters(fake, pub)) == result.rejected
