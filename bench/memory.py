"""Measurement 5: the worker's peak memory with state for many distinct children.

One reported_missing event for each of C distinct children (``workload.distinct_children``)
is published first; then a fresh worker (memory:// store, as by default) is started on that
backlog. Every 0.5 s the bench samples the worker's VmRSS (/proc/<pid>/status) and how many of
the events it has processed (its ``hubstream_events_in_total`` counter). When it has processed
all C (or the stage cap is reached), VmHWM, the kernel's record of the process's peak resident
set, is the figure. "idle" is VmHWM before its first event: the fixed cost of the process.

If the cap stops it early the figures are for the children processed so far, and the JSON
also holds a straight-line extrapolation to C from the RSS samples (RSS against children).
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import Context, bar, free_port, metric_sum, namespace, proc_memory_kib, rate, scrape
from bench.workload import distinct_children
from hubstream import topics


def run(ctx: Context) -> dict[str, Any]:
    from producers.publish import Publisher

    children = ctx.memory_children
    out: dict[str, Any] = {"children": children}
    with namespace("memory", ctx.run, ctx.base, ctx.log_dir, database=False) as ns:
        settings = ns.settings
        started = time.time()
        with Publisher(settings) as publisher:
            for schema, event in bar(
                distinct_children(children), total=children, desc="publish children", unit=" events"
            ):
                publisher.publish_json(schema, event)
        out["publish_seconds"] = time.time() - started
        out["delivery_failures"] = len(publisher.delivery_failures)
        port = free_port()
        worker = ns.start_worker(port, log_name="worker-memory")
        missing = topics.MISSING_EPISODES.name
        samples: list[tuple[float, int, int]] = []  # (wall time, events processed, VmRSS KiB)
        idle_hwm = 0
        first_at: float | None = None
        with bar(total=children, desc="worker", unit=" events") as progress:
            while worker.poll() is None:
                now = time.time()
                try:
                    done: int | None = int(
                        metric_sum(scrape(port, timeout_s=10.0), "hubstream_events_in_total", topic=missing)
                    )
                except OSError:
                    done = None  # not serving yet, or too busy to answer in time
                memory = proc_memory_kib(worker.pid)
                if done is not None:
                    if done == 0:
                        idle_hwm = memory.get("VmHWM", idle_hwm)
                    elif first_at is None:
                        first_at = now
                    samples.append((now, done, memory.get("VmRSS", 0)))
                    progress.set_postfix_str(f"RSS {memory.get('VmRSS', 0) / 1024:,.0f} MiB", refresh=False)
                    progress.update(done - progress.n)
                    if done >= children:
                        break
                if first_at is not None and now - first_at > ctx.stage_cap_s:
                    break
                if first_at is None and now - started > ctx.stage_cap_s + 600:
                    raise TimeoutError("the worker processed nothing")
                time.sleep(0.5)
        time.sleep(2.0)  # let it finish the event it is on and its state writes
        final = proc_memory_kib(worker.pid)
        ns.stop(worker)
    processed = samples[-1][1] if samples else 0
    out.update(
        processed=processed,
        finished=processed >= children,
        worker_seconds=(samples[-1][0] - first_at) if first_at and samples else None,
        worker_events_per_s=rate(processed, samples[-1][0] - first_at) if first_at and samples else None,
        worker_vmhwm_kib=final.get("VmHWM", 0),
        worker_vmrss_kib=final.get("VmRSS", 0),
        idle_vmhwm_kib=idle_hwm,
        kib_per_child=(final.get("VmHWM", 0) - idle_hwm) / processed if processed else None,
        extrapolated_vmrss_kib=_extrapolate(samples, children),
        rss_samples=[
            (round(t - samples[0][0], 1), n, r) for t, n, r in samples[:: max(1, len(samples) // 60)]
        ],
    )
    return out


def _extrapolate(samples: list[tuple[float, int, int]], target: int) -> float | None:
    """Least-squares line of RSS against events processed (past the first 10%), read at ``target``."""
    if not samples:
        return None
    last = samples[-1][1]
    points = [(n, r) for _, n, r in samples if n >= 0.1 * last and r]
    if len(points) < 3:
        return None
    mean_n = sum(n for n, _ in points) / len(points)
    mean_r = sum(r for _, r in points) / len(points)
    var = sum((n - mean_n) ** 2 for n, _ in points)
    if var == 0:
        return None
    slope = sum((n - mean_n) * (r - mean_r) for n, r in points) / var
    return mean_r + slope * (target - mean_n)
