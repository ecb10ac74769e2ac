"""Measurements 1 and 2: end-to-end replay of N simulated events, and the plain-consumer ceiling.

The pipeline runs as it does in production, every stage a process of its own: the worker and
both case-store consumers are started (and have joined their groups) before the first event is
published, then the bench process publishes the simulated county through ``Publisher``.

Clock points (wall time, one host, so one clock):

* t0: just before the first event is handed to the publisher.
* publish end: after the producer's flush, so every event is acknowledged by the broker.
* worker caught up: the first lag sample (every 0.25 s after publishing ends, 1 s before) at
  which the worker group's committed offsets equal the end offsets of all its input and
  re-keyed topics, confirmed by a second zero sample 2 s later. The worker commits every
  0.1 s, so this is up to about 0.4 s after it really finished.
* last row: with the worker caught up, the alerts (and hub-decisions) topics' end offsets are
  final; last row is the first moment (polled every 0.25 s) at which the hub store's
  consumer_offsets table, written in the same transaction as the rows, holds offsets at or
  past those end offsets. So every alert row is committed in PostgreSQL by then.

End-to-end events/s = N / (last row - t0). The phases, from the same run: publish = N /
(publish end - t0); worker = N / (worker caught up - t0), which cannot beat publishing since it
runs behind it. The consumer's own capacity (rows/s) is measured afterwards on the same topics
(``consumer_drain``): the hub consumer's arrival rate during the replay is only the alert rate.

The ceiling (measurement 2): with the pipeline stopped, one plain kafka-python consumer
(assigned, no group) reads the same four input topics from the beginning and decodes every
message with ``Serde.decode``, nothing else. The best a single Python process can consume.
"""

from __future__ import annotations

import os
import time
from typing import Any

from kafka import TopicPartition

from bench import profile
from bench.common import (
    Context,
    KafkaProbe,
    Namespace,
    bar,
    environment,
    free_port,
    namespace,
    proc_cpu_seconds,
    proc_memory_kib,
    query,
    rate,
    store_env,
    wait_store,
)
from bench.cpu import CpuAccount, pid_file, with_children
from bench.watch import LagWatch
from bench.workload import lines_of, simulated_file
from hubstream import kafka, topics
from hubstream.progress import WORKER_INPUTS, worker_topics
from hubstream.serde import serde_for
from hubstream.settings import Settings

SETTLE_S = 3.0


def run(ctx: Context) -> dict[str, Any]:
    from producers.publish import publish_lines

    path, counts = simulated_file(ctx.cache_dir, ctx.events)
    n = sum(counts.values())
    out: dict[str, Any] = {"events": n, "by_schema": counts, "source": str(path), "cpus": os.cpu_count()}
    with namespace("e2e", ctx.run, ctx.base, ctx.log_dir) as ns:
        settings = ns.settings
        probe = KafkaProbe(settings)
        try:
            workers = [
                ns.start_worker(
                    free_port(), "--assignor", ctx.assignor, log_name=f"worker-{n}" if n else "worker"
                )
                for n in range(ctx.workers)
            ]
            worker = workers[0]
            hub_sink = ns.start_sink("hub", free_port())
            health_sink = ns.start_sink("health", free_port())
            probe.wait_stable(
                [ns.worker_group, ns.sink_group("hub"), ns.sink_group("health")],
                timeout_s=180,
                members={ns.worker_group: ctx.workers},
            )
            time.sleep(SETTLE_S + ctx.idle_first_s)
            watch = LagWatch(
                settings,
                ns.worker_group,
                worker_topics(ns.worker_group),
                desc="worker",
                total=n,
            )
            watch.start()
            spy = None
            if ctx.profile_seconds:
                spy = profile.start(worker.pid, ctx.profile_seconds, ctx.log_dir / "e2e-worker.pyspy.txt")
            cpu0 = [proc_cpu_seconds(w.pid) or 0.0 for w in workers]
            account = _cpu_account(ctx.base, [w.pid for w in workers], hub_sink.pid, health_sink.pid)
            account.start()
            t0 = time.time()
            lines = bar(lines_of(path), total=n, desc="publish", unit=" events", position=0)
            published = publish_lines(settings, "mixed", lines, progress=False)
            t_pub = time.time()
            watch.interval_s = 0.25
            out.update(
                published=published.published,
                rejected=published.rejected,
                publish_seconds=t_pub - t0,
                publish_events_per_s=rate(n, t_pub - t0),
                profiled=bool(ctx.profile_seconds),
            )
            try:
                t_worker: float | None = watch.caught_up(after=t_pub, timeout_s=ctx.stage_cap_s)
            except TimeoutError:
                t_worker = None
            watch.stop()
            t_stop = t_worker or time.time()
            used = [(proc_cpu_seconds(w.pid) or 0.0) - c for w, c in zip(workers, cpu0, strict=True)]
            out["workers"] = ctx.workers
            out["worker_cpu_utilisation"] = rate(sum(used), t_stop - t0)  # in cores, over all workers
            out["worker_memory_kib"] = proc_memory_kib(worker.pid)  # the first worker's
            out["worker_behind_at_publish_end"] = watch.behind_at(t_pub)
            if spy is not None:
                spy.wait(timeout=ctx.profile_seconds + 60)
                out["profile"] = profile.summarise(ctx.log_dir / "e2e-worker.pyspy.txt")
            hub_topics = [topics.ALERTS.name, topics.HUB_DECISIONS.name]
            if t_worker is None:
                # Capped: the last row lands after now, so N / (now - t0) bounds end to end from
                # above; how far the worker got through its inputs is its own progress figure.
                got = probe.lag(ns.worker_group, [t.name for t in WORKER_INPUTS])
                done = got[1] if got else 0
                out.update(
                    finished=False,
                    note=f"the worker had not caught up {ctx.stage_cap_s:.0f} s after publishing ended "
                    f"({watch.behind_at(t_stop)} messages still behind on its input and re-keyed topics); "
                    "end-to-end events/s is an upper bound",
                    worker_inputs_done=done,
                    worker_behind_at_cap=watch.behind_at(t_stop),
                    worker_seconds=t_stop - t0,
                    worker_events_per_s=rate(done, t_stop - t0),
                    events_per_s=rate(n, t_stop - t0),
                    seconds=t_stop - t0,
                )
                out["cpu_core_seconds"] = account.stop()
                ns.stop_all()  # the alerts topics are final only once the worker has stopped
                hub_ends = probe.end_offsets(hub_topics)
            else:
                hub_ends = probe.end_offsets(hub_topics)
                t_row = _wait_final(
                    probe,
                    settings.pg_dsn,
                    "hub",
                    ns.sink_group("hub"),
                    hub_topics,
                    hub_ends,
                    timeout_s=ctx.stage_cap_s,
                )
                health_ends = probe.end_offsets([topics.HEALTH_FLAGS.name])
                try:
                    t_health: float | None = wait_store(
                        settings.pg_dsn,
                        "health",
                        ns.sink_group("health"),
                        health_ends,
                        timeout_s=ctx.stage_cap_s,
                    )
                except TimeoutError:
                    t_health = None  # reported as missing; the hub figures stand
                out["cpu_core_seconds"] = account.stop()
                out.update(
                    finished=True,
                    seconds=t_row - t0,
                    events_per_s=rate(n, t_row - t0),
                    worker_seconds=t_worker - t0,
                    worker_events_per_s=rate(n, t_worker - t0),
                    last_row_after_worker_s=t_row - t_worker,
                    health_caught_up_seconds=None if t_health is None else t_health - t0,
                )
            out.update(_store_figures(settings, probe))
            ns.stop_all()
            out["ceiling"] = ceiling(settings, [t.name for t in WORKER_INPUTS], n)
            out["ratio_to_ceiling"] = out["events_per_s"] / out["ceiling"]["events_per_s"]
            out["consumer_drain"] = consumer_drain(ns, hub_ends, ctx.stage_cap_s)
        finally:
            probe.close()
    return out


def _cpu_account(base: Settings, workers: list[int], hub_sink: int, health_sink: int) -> CpuAccount:
    """The parts of the replay whose CPU is counted, from t0 to the last row (or the cap)."""
    home = base.home
    return CpuAccount({
        "worker": lambda: workers,
        "publisher (this process)": lambda: [os.getpid()],
        "broker": pid_file(home / "kafka" / "kafka.pid"),
        "schema registry": pid_file(home / "registry" / "registry.pid"),
        "PostgreSQL": with_children(pid_file(home / "pg" / "data" / "postmaster.pid")),
        "hub sink": lambda: [hub_sink],
        "health sink": lambda: [health_sink],
    })


def _wait_final(
    probe: KafkaProbe,
    dsn: str,
    store: str,
    group: str,
    names: list[str],
    ends: dict[TopicPartition, int],
    *,
    timeout_s: float,
) -> float:
    """wait_store, then once more if the topics grew meanwhile (a late flush of the worker's)."""
    while True:
        reached = wait_store(dsn, store, group, ends, timeout_s=timeout_s)
        now = probe.end_offsets(names)
        if now == ends:
            return reached
        ends = now


def _store_figures(settings: Settings, probe: KafkaProbe) -> dict[str, Any]:
    [(alerts, decisions)] = query(
        settings.pg_dsn, "SELECT (SELECT count(*) FROM hub.alert_flags), (SELECT count(*) FROM hub.decisions)"
    )
    [(flags,)] = query(settings.pg_dsn, "SELECT count(*) FROM health.cse_flags")
    by_rule = dict(query(settings.pg_dsn, "SELECT rule, count(*) FROM hub.alert_flags GROUP BY 1 ORDER BY 1"))
    return {
        "alert_messages": probe.total([topics.ALERTS.name]),
        "alert_rows": alerts,
        "alert_rows_by_rule": by_rule,
        "decision_rows": decisions,
        "health_flag_rows": flags,
        "dead_letters": probe.total([topics.DEAD_LETTERS.name]),
    }


def ceiling(settings: Settings, names: list[str], expected: int) -> dict[str, Any]:
    """One plain confluent-kafka consumer (the worker's client library), assigned every
    partition, decoding every message and nothing else."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer
    from confluent_kafka import TopicPartition as Partition

    serde = serde_for(settings)
    config = {"group.id": "bench-ceiling", "enable.auto.commit": False}
    consumer = Consumer(kafka.librdkafka_config(settings, "admin", **config))
    try:
        metadata = consumer.list_topics(timeout=30)
        tps = [
            Partition(name, p, OFFSET_BEGINNING)
            for name in names
            for p in sorted(metadata.topics[name].partitions)
        ]
        total = 0
        for tp in tps:
            low, high = consumer.get_watermark_offsets(tp, timeout=30)
            total += high - low
        consumer.assign(tps)
        seen = 0
        with bar(total=total, desc="plain consumer", unit=" msgs") as progress:
            started = time.perf_counter()
            while seen < total:
                messages = consumer.consume(10_000, 0.5)
                for m in messages:
                    if m.error() is None:
                        serde.decode(m.value())
                seen += len(messages)
                progress.update(len(messages))
            elapsed = time.perf_counter() - started
    finally:
        consumer.close()
    return {"messages": seen, "expected": expected, "seconds": elapsed, "events_per_s": rate(seen, elapsed)}


def consumer_drain(ns: Namespace, ends: dict[TopicPartition, int], timeout_s: float) -> dict[str, Any]:
    """The hub consumer alone on the replay's alerts and decisions, into a fresh store: rows/s.

    Rate between its first and last committed transaction, from the access log (one row per
    record, stamped with its transaction's time): (rows - first transaction's rows) / (last
    transaction's time - first's). Start-up and group join are thus left out.
    """
    from consumers.run import prepare_database

    database = f"{ns.database}_drain"
    ns.create_database(database)
    env = store_env(ns.base, database)
    with environment(env):
        prepare_database(Settings())
    # The same group as the replay's consumer (the one its principal may use): the consumer
    # positions itself from the database's offsets, and this database is new, so it starts over.
    group = ns.sink_group("hub")
    proc = ns.start_sink("hub", 0, extra_env=env, log_name="hub-drain")
    capped = False
    try:
        wait_store(env["HUBSTREAM_PG_DSN"], "hub", group, ends, timeout_s=timeout_s)
    except TimeoutError:
        capped = True  # the rate so far is still the consumer's rate
    finally:
        ns.stop(proc)
    [(rows, first_at, last_at, first_rows, batches)] = query(
        env["HUBSTREAM_PG_DSN"],
        "SELECT count(*), min(at), max(at),"
        " count(*) FILTER (WHERE at = (SELECT min(at) FROM audit.access_log)), count(DISTINCT at)"
        " FROM audit.access_log WHERE action = 'write'",
    )
    span = (last_at - first_at).total_seconds() if rows else 0.0
    return {
        "rows": rows,
        "finished": not capped,
        "transactions": batches,
        "seconds": span,
        "rows_per_s": rate(rows - first_rows, span) if batches > 1 else float("nan"),
    }
