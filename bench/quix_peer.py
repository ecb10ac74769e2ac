"""The peer: the repeat-missing rule as a quixstreams application (measurement 3).

Run by ``bench.peer`` with the bench virtualenv's Python (quixstreams is not a hubstream
dependency) and the project on PYTHONPATH::

    .local/bench-venv/bin/python -m bench.quix_peer --topic T --group G --expected N --result out.json

Kept honest: the same input topic and bytes as our worker, decoded with our ``Serde`` (the same
Confluent-framed Avro, schemas from the same registry) and checked against the domain rules
(``schemas.domain.CHECKS``) as our worker does; state per child in quixstreams' State API
(RocksDB, with its changelog topic, as our worker's tables have theirs); alerts produced to a
topic. The rule has our
semantics: on ``occurred_at``, a report qualifies when the distinct episodes with a report in
[t - 90 days, t] number at least 3; each episode fires once; a duplicate event id is ignored;
reports older than the child's latest minus 30 days' lateness are refused, and state older than
90 + 30 days is pruned. (Our worker keeps one watermark per partition; this keeps one per child.
For an in-order replay the alerts are the same; the counts are in the results to compare.)

It times itself: wall time at the first and the last processed message (quixstreams'
``on_message_processed``), and stops on reaching ``--expected`` messages or ``--max-seconds``.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from quixstreams import Application, State  # type: ignore[import-not-found,unused-ignore]
from quixstreams.kafka.configuration import ConnectionConfig  # type: ignore[import-not-found,unused-ignore]

import schemas
from hubstream import kafka
from hubstream.serde import Serde
from hubstream.settings import Settings
from schemas.domain import CHECKS

DAY_MS = 86_400_000


class RepeatMissing:
    def __init__(self, serde: Serde, count: int, days: int, lateness_days: int) -> None:
        self.serde = serde
        self.count = count
        self.window_ms = days * DAY_MS
        self.lateness_ms = lateness_days * DAY_MS
        self.keep_ms = (days + lateness_days) * DAY_MS
        self.settings = f"count={count},days={days}"
        self.alerts = 0
        self.refused = 0

    def step(self, value: bytes, state: State) -> list[dict[str, Any]]:
        name, record = self.serde.decode(value)
        CHECKS[name](record)  # as our worker does: decoding has checked the structure
        if record["kind"] != "reported_missing":
            return []
        at = int(record["occurred_at"].timestamp() * 1000)
        event_id, episode = record["event_id"], record["episode_id"]
        # Each report: [occurred_at ms, event id, episode id, high risk], kept in time order.
        reports: list[list[Any]] = state.get("reports", [])
        if any(r[1] == event_id for r in reports):
            return []
        mark: int | None = state.get("watermark")
        if mark is not None and at < mark - self.lateness_ms:
            self.refused += 1
            return []
        bisect.insort(reports, [at, event_id, episode, record["risk_level"] == "high"])
        fired: set[str] = set(state.get("fired", []))
        alerts: list[dict[str, Any]] = []
        for anchor in reports:
            if anchor[2] in fired:
                continue
            start = anchor[0] - self.window_ms
            window = [r for r in reports if start <= r[0] <= anchor[0]]
            if len({r[2] for r in window}) >= self.count:
                fired.add(anchor[2])
                alerts.append(self._alert(record, anchor, window))
        mark = at if mark is None else max(mark, at)
        horizon = mark - self.keep_ms
        reports = [r for r in reports if r[0] >= horizon]
        held = {r[2] for r in reports}
        state.set("reports", reports)
        state.set("fired", sorted(fired & held))
        state.set("watermark", mark)
        self.alerts += len(alerts)
        return alerts

    def _alert(self, record: dict[str, Any], anchor: list[Any], window: list[list[Any]]) -> dict[str, Any]:
        child = record["person_key"]
        ident = hashlib.sha256(f"repeat_missing\0{child}\0{anchor[2]}\0{self.settings}".encode()).hexdigest()[
            :32
        ]
        return {
            "alert_id": ident,
            "rule": "repeat_missing",
            "subject": child,
            "area": record["area"],
            "severity": "high" if any(r[3] for r in window) else "medium",
            "window_start_ms": anchor[0] - self.window_ms,
            "window_end_ms": anchor[0],
            "evidence": [r[1] for r in window],
        }


def broker() -> Any:
    """The broker as our own clients reach it (hubstream.kafka.connection), as the operators' principal.

    On the secure listener that is SASL_SSL with SCRAM-SHA-512 and our CA, so the peer pays for
    TLS as our worker does; admin is a super user, so the peer needs no ACLs of its own.
    """
    conn = kafka.connection(Settings(), "admin")
    if "security_protocol" not in conn:
        return conn["bootstrap_servers"]
    return ConnectionConfig(
        bootstrap_servers=conn["bootstrap_servers"],
        security_protocol=conn["security_protocol"].lower(),
        sasl_mechanism=conn["sasl_mechanism"],
        sasl_username=conn["sasl_plain_username"],
        sasl_password=conn["sasl_plain_password"],
        ssl_ca_location=conn["ssl_cafile"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--registry", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--alerts-topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--expected", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, default=3600)
    parser.add_argument("--result", type=Path, required=True)
    args = parser.parse_args()

    rule = RepeatMissing(
        Serde(schemas.ConfluentRegistryClient(args.registry)), count=3, days=90, lateness_days=30
    )
    clock: dict[str, float] = {"count": 0, "first": 0.0, "last": 0.0}

    def processed(topic: str, partition: int, offset: int) -> None:
        now = time.time()
        clock["count"] += 1
        if clock["count"] == 1:
            clock["first"] = now
        clock["last"] = now
        if clock["count"] >= args.expected or now - clock["first"] > args.max_seconds:
            app.stop()

    app = Application(
        broker_address=broker(),
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        loglevel="WARNING",
        on_message_processed=processed,
    )
    source = app.topic(args.topic, key_deserializer="bytes", value_deserializer="bytes")
    alerts = app.topic(args.alerts_topic, key_serializer="bytes", value_serializer="json")
    sdf = app.dataframe(source)
    sdf = sdf.apply(rule.step, stateful=True, expand=True)
    sdf.to_topic(alerts)
    started = time.time()
    app.run()
    count = int(clock["count"])
    elapsed = clock["last"] - clock["first"]
    args.result.write_text(
        json.dumps(
            {
                "messages": count,
                "expected": args.expected,
                "finished": count >= args.expected,
                "seconds": elapsed,
                "startup_seconds": clock["first"] - started if count else None,
                "events_per_s": (count - 1) / elapsed if count > 1 and elapsed > 0 else None,
                "alerts": rule.alerts,
                "refused_late": rule.refused,
            }
        )
    )


if __name__ == "__main__":
    main()
