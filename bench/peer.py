"""Measurement 3: our worker against a quixstreams peer on the same missing-episodes topic.

Both read the same topic, in a namespace of its own that holds only the simulated county's
missing-episode events (published from the same file as the replay, with the same keys, so the
same partitions). Each is timed from its first processed message to its last, so start-up and
group joining are left out of both:

* the peer (``bench.quix_peer``) counts in-process, with quixstreams' on_message_processed;
* our worker is read from outside: its ``hubstream_events_in_total`` counter for the topic,
  scraped from /metrics every 0.25 s (so each end is known to within 0.25 s).

Our worker does more per event than the peer: return-interview tracking and forwarding located
episodes to the hotspot rule (its own agent in the same process). That is the worker we run,
so that is what is compared; the README says so.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import profile
from bench.common import (
    BENCH_VENV,
    Context,
    KafkaProbe,
    Namespace,
    bar,
    free_port,
    metric_sum,
    namespace,
    proc_cpu_seconds,
    rate,
    scrape,
)
from bench.workload import lines_of, simulated_file
from hubstream import topics
from hubstream.settings import PROJECT_ROOT


def run(ctx: Context) -> dict[str, Any]:
    from producers.publish import publish_lines

    path, counts = simulated_file(ctx.cache_dir, ctx.events)
    expected = counts.get("MissingEpisodeEvent", 0)
    out: dict[str, Any] = {"source": str(path)}
    with namespace("peer", ctx.run, ctx.base, ctx.log_dir, database=False) as ns:
        settings = ns.settings
        missing = topics.MISSING_EPISODES.name
        lines = bar(
            lines_of(path, ("MissingEpisodeEvent",)),
            total=expected,
            desc="publish missing episodes",
            unit=" events",
        )
        published = publish_lines(settings, "mixed", lines, progress=False)
        probe = KafkaProbe(settings)
        try:
            messages = probe.total([missing])
        finally:
            probe.close()
        out["published"] = published.published
        out["quix"] = _quix(ctx, ns.prefix, settings.registry_url, missing, messages)
        out["worker"] = _worker(ctx, ns, missing, messages)
        # The same rule as the peer, alone: how a replay after that rule changed is run.
        out["worker_repeat_missing"] = _worker(
            ctx, ns, missing, messages, "--rules", "repeat_missing",
            app_id=f"{ns.prefix}hubstream-worker-replay-repeat-missing", log_name="worker-repeat-missing",
        )
    peer = out["quix"].get("events_per_s")
    for name, ratio in (("worker_repeat_missing", "ratio"), ("worker", "ratio_all_rules")):
        ours = out[name].get("events_per_s")
        out[ratio] = ours / peer if ours and peer else None
    return out


def _quix(ctx: Context, prefix: str, registry: str, topic: str, expected: int) -> dict[str, Any]:
    python = _quix_python()
    if python is None:
        return {
            "error": "quixstreams is not installed (bench/README.md, Setting up)",
            "messages": 0,
        }
    result = ctx.log_dir / "peer-quix-result.json"
    state_dir = ctx.base.home / "bench-state" / prefix.rstrip(".")
    cmd = [
        str(python),
        "-m",
        "bench.quix_peer",
        "--registry",
        registry,
        "--topic",
        topic,
        "--alerts-topic",
        f"{prefix}quix-alerts",
        "--group",
        f"{prefix}quix-repeat-missing",
        "--state-dir",
        str(state_dir),
        "--expected",
        str(expected),
        "--max-seconds",
        str(ctx.stage_cap_s),
        "--result",
        str(result),
    ]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    ctx.log_dir.mkdir(parents=True, exist_ok=True)
    with (
        (ctx.log_dir / "peer-quix.log").open("ab") as log,
        bar(total=expected, desc="quixstreams peer", unit=" msgs") as progress,
    ):
        proc = subprocess.Popen(cmd, env=env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT)
        cpu_start = time.time()
        cpu = 0.0
        while proc.poll() is None:
            cpu = proc_cpu_seconds(proc.pid) or cpu
            progress.set_postfix_str(f"cpu {cpu:.0f} s", refresh=False)
            progress.update(0)
            time.sleep(0.5)
            if time.time() - cpu_start > ctx.stage_cap_s + 300:
                proc.kill()
    if not result.exists():
        log_path = ctx.log_dir / "peer-quix.log"
        return {
            "error": f"the peer exited {proc.returncode} without a result; see {log_path}",
            "messages": 0,
        }
    figures: dict[str, Any] = json.loads(result.read_text())
    figures["cpu_seconds"] = cpu
    return figures


def _quix_python() -> Path | None:
    """The bench virtualenv's Python if there is one, else ours if it has quixstreams (the bench extra)."""
    own = BENCH_VENV / "bin" / "python"
    if own.exists():
        return own
    if importlib.util.find_spec("quixstreams") is not None:
        return Path(sys.executable)
    return None


def _worker(
    ctx: Context, ns: Namespace, topic: str, expected: int, *args: str,
    app_id: str | None = None, log_name: str = "worker-alone",
) -> dict[str, Any]:
    port = free_port()
    worker = ns.start_worker(port, *args, app_id=app_id, log_name=log_name)
    spy = None
    first: tuple[float, float] | None = None
    last: tuple[float, float] = (time.time(), 0.0)
    cpu_first = 0.0
    started = time.time()
    with bar(total=expected, desc="our worker", unit=" msgs") as progress:
        while True:
            now = time.time()
            try:
                count: float | None = metric_sum(
                    scrape(port, timeout_s=10.0), "hubstream_events_in_total", topic=topic
                )
            except OSError:
                count = None  # not serving yet, or too busy to answer in time: keep the last reading
            if count is not None:
                if count > 0 and first is None:
                    first, cpu_first = (now, count), proc_cpu_seconds(worker.pid) or 0.0
                    if ctx.profile_seconds:
                        out_file = ctx.log_dir / f"peer-{log_name}.pyspy.txt"
                        spy = profile.start(worker.pid, ctx.profile_seconds, out_file)
                last = (now, count)
                progress.update(int(count) - progress.n)
                if count >= expected:
                    break
            if first is not None and now - first[0] > ctx.stage_cap_s:
                break
            if first is None and now - started > 300:
                raise TimeoutError("our worker processed nothing in 300 s")
            time.sleep(0.25)
    cpu = (proc_cpu_seconds(worker.pid) or 0.0) - cpu_first
    if spy is not None:
        spy.wait(timeout=ctx.profile_seconds + 60)
    try:
        metrics = scrape(port, timeout_s=10.0)
        alerts = metric_sum(metrics, "hubstream_alerts_raised_total", rule="repeat_missing")
    except OSError:
        alerts = None
    ns.stop(worker)
    if first is None:
        return {"error": "our worker processed nothing", "messages": 0}
    elapsed = last[0] - first[0]
    out: dict[str, Any] = {
        "messages": int(last[1]),
        "expected": expected,
        "finished": last[1] >= expected,
        "seconds": elapsed,
        "startup_seconds": first[0] - started,
        "events_per_s": rate(last[1] - first[1], elapsed),
        "cpu_seconds": cpu,
        "cpu_utilisation": rate(cpu, elapsed),
        "repeat_missing_alerts": None if alerts is None else int(alerts),
    }
    if spy is not None:
        out["profile"] = profile.summarise(ctx.log_dir / f"peer-{log_name}.pyspy.txt")
    return out

