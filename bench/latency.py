"""Measurement 4: latency at a steady rate, from an event's publication to its alert and its row.

The worker and both consumers run (and have joined their groups) before publishing starts. The
bench publishes simulated missing-episode and intelligence events through ``Publisher`` at a
fixed rate (each event sent at t0 + i / rate, never early; if the publisher falls behind it
sends as fast as it can and the achieved rate says so).

Exact method, per alert:

* trigger time: an alert is raised while processing the last of its evidence events to arrive,
  so its trigger time is the latest Kafka record timestamp (the producer's CreateTime, set at
  ``send``) among its evidence events, read back from the input topics after the run;
* alert time: the Kafka record timestamp of the alert message on the alerts topic (set by the
  worker's producer when it sends the alert);
* row time: ``hub.alert_flags.received_at``, the start of the consumer's committing transaction
  (PostgreSQL's now(); the commit follows within the same batch).

publish -> alert = alert time - trigger time; publish -> row = row time - trigger time; both over
every alert of an event-triggered rule. ``return_interview_overdue`` alerts are left out: they
fire when event time passes a deadline, on whichever event moves the watermark, which is not in
their evidence. All clocks are this host's.

As a cross-check the same figures are read from the processes' own histograms
(``hubstream_publish_to_alert_seconds`` from the worker, ``hubstream_publish_to_row_seconds``
from the hub consumer, which times an *alert message's* publication to its row), reported as
the upper bound of the bucket holding each percentile.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from kafka import TopicPartition

from bench.common import (
    Context,
    KafkaProbe,
    bar,
    bucket_quantile,
    free_port,
    histogram,
    namespace,
    percentile,
    query,
    rate,
    scrape,
    wait_store,
)
from bench.watch import LagWatch
from bench.workload import steady_feed
from hubstream import kafka, topics
from hubstream.progress import worker_topics
from hubstream.serde import Serde, serde_for
from hubstream.settings import Settings

TIME_DRIVEN = {"return_interview_overdue"}


def run(ctx: Context) -> dict[str, Any]:
    from producers.publish import Publisher

    count = ctx.latency_rate * ctx.latency_seconds
    feed = steady_feed(count)
    out: dict[str, Any] = {"target_rate": ctx.latency_rate, "seconds_target": ctx.latency_seconds}
    with namespace("latency", ctx.run, ctx.base, ctx.log_dir) as ns:
        settings = ns.settings
        probe = KafkaProbe(settings)
        try:
            worker_port, hub_port = free_port(), free_port()
            ns.start_worker(worker_port)
            ns.start_sink("hub", hub_port)
            ns.start_sink("health", free_port())
            probe.wait_stable([ns.worker_group, ns.sink_group("hub"), ns.sink_group("health")], timeout_s=180)
            time.sleep(3.0)
            with Publisher(settings) as publisher:
                interval = 1.0 / ctx.latency_rate
                t0 = time.time()
                for i, (schema, event) in enumerate(
                    bar(feed, desc=f"publish at {ctx.latency_rate}/s", unit=" events")
                ):
                    wait = t0 + i * interval - time.time()
                    if wait > 0:
                        time.sleep(wait)
                    publisher.publish_json(schema, event)
                publisher.flush()
                t_end = time.time()
            out.update(published=len(feed), seconds=t_end - t0, achieved_rate=rate(len(feed), t_end - t0))
            watch = LagWatch(
                settings,
                ns.worker_group,
                worker_topics(ns.worker_group),
                desc="worker",
                interval_s=0.25,
            )
            watch.start()
            try:
                t_worker = watch.caught_up(after=t_end, timeout_s=ctx.stage_cap_s)
                out["worker_caught_up_after_publish_s"] = t_worker - t_end
            except TimeoutError:
                out["worker_caught_up_after_publish_s"] = None
                out["note"] = f"the worker had not caught up {ctx.stage_cap_s:.0f} s after publishing ended"
            finally:
                watch.stop()
            ends = probe.end_offsets([topics.ALERTS.name])
            try:
                wait_store(settings.pg_dsn, "hub", ns.sink_group("hub"), ends, timeout_s=ctx.stage_cap_s)
            except TimeoutError:
                out["note"] = (out.get("note", "") + "; the hub store had not caught up").lstrip("; ")
            worker_metrics, hub_metrics = scrape(worker_port), scrape(hub_port)
            serde = serde_for(settings)
            published_at = _record_times(
                settings,
                serde,
                [
                    t.name
                    for t in (
                        topics.MISSING_EPISODES,
                        topics.POLICE_INTELLIGENCE,
                        topics.PARTNER_INTELLIGENCE,
                    )
                ],
            )
            alerts = _alerts(settings, serde)
            rows = query(settings.pg_dsn, "SELECT alert_id, rule, received_at FROM hub.alert_flags")
        finally:
            probe.close()
    to_row: dict[str, list[float]] = defaultdict(list)
    to_alert: dict[str, list[float]] = defaultdict(list)
    untraced = 0
    slowest: list[tuple[float, float, str]] = []
    for alert_id, rule, received_at in rows:
        if rule in TIME_DRIVEN or alert_id not in alerts:
            continue
        sent_ms, evidence = alerts[alert_id]
        times = [published_at[e] for e in evidence if e in published_at]
        if not times:
            untraced += 1
            continue
        trigger_ms = max(times)
        to_row[rule].append(received_at.timestamp() - trigger_ms / 1000)
        slowest.append((received_at.timestamp() - trigger_ms / 1000, trigger_ms / 1000 - t0, rule))
        to_alert[rule].append((sent_ms - trigger_ms) / 1000)
    out["publish_to_row"] = _summary(to_row)
    # When in the run the slowest alerts' triggers were published: a pattern (start-up, every
    # few seconds) points at the cause.
    out["slowest"] = [
        {"seconds": round(s, 3), "published_after_s": round(at, 2), "rule": r}
        for s, at, r in sorted(slowest, reverse=True)[:20]
    ]
    out["publish_to_alert"] = _summary(to_alert)
    out["alerts_left_out"] = {
        "time_driven": sum(1 for _, rule, _ in rows if rule in TIME_DRIVEN),
        "no_evidence_found": untraced,
    }
    row_hist = histogram(hub_metrics, "hubstream_publish_to_row_seconds", store="hub")
    alert_hist = histogram(worker_metrics, "hubstream_publish_to_alert_seconds")
    out["histograms"] = {
        "alert_message_to_row_seconds": {
            "count": row_hist["count"],
            "p50_at_most": bucket_quantile(row_hist, 50),
            "p99_at_most": bucket_quantile(row_hist, 99),
        },
        "publish_to_alert_seconds": {
            "count": alert_hist["count"],
            "p50_at_most": bucket_quantile(alert_hist, 50),
            "p99_at_most": bucket_quantile(alert_hist, 99),
        },
    }
    return out


def _summary(by_rule: dict[str, list[float]]) -> dict[str, Any]:
    every = [v for values in by_rule.values() for v in values]
    if not every:
        return {"alerts": 0}
    return {
        "alerts": len(every),
        "p50": percentile(every, 50),
        "p99": percentile(every, 99),
        "max": max(every),
        "by_rule": {
            rule: {"alerts": len(v), "p50": percentile(v, 50), "p99": percentile(v, 99), "max": max(v)}
            for rule, v in sorted(by_rule.items())
        },
    }


def _read_all(settings: Settings, names: list[str]) -> list[Any]:
    consumer = kafka.consumer(settings, "admin", enable_auto_commit=False)
    try:
        tps = [TopicPartition(n, p) for n in names for p in sorted(consumer.partitions_for_topic(n) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        messages: list[Any] = []
        deadline = time.monotonic() + 300
        while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                messages.extend(records)
        return messages
    finally:
        consumer.close()


def _record_times(settings: Settings, serde: Serde, names: list[str]) -> dict[str, int]:
    """event id -> Kafka record timestamp (ms) of its message."""
    return {serde.decode(m.value)[1]["event_id"]: m.timestamp for m in _read_all(settings, names)}


def _alerts(settings: Settings, serde: Serde) -> dict[str, tuple[int, list[str]]]:
    """alert id -> (record timestamp of its first message, evidence event ids)."""
    out: dict[str, tuple[int, list[str]]] = {}
    for m in _read_all(settings, [topics.ALERTS.name]):
        record = serde.decode(m.value)[1]
        known = out.get(record["alert_id"])
        if known is None or m.timestamp < known[0]:
            out[record["alert_id"]] = (m.timestamp, list(record["evidence"]))
    return out
