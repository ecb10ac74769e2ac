"""Publisher throughput: the simulated county through ``hubstream publish mixed``, on the real broker.

    python bench/publish.py [--events 50000] [--repeat 3] [--cli] [--file F]

Each run gets a namespace of its own (topics ``bench-publish-<run>.``, the declared ACLs for
them, removed afterwards), publishes every line with the usual guarantees (validation, keys,
encrypted narratives, per-agency principals, acks=all with each delivery confirmed), then checks
the topics' end offsets add up to the lines published: nothing lost. Prints events/s per run,
the best and the spread. ``--cli`` times the ``hubstream publish mixed --file F`` command as a
subprocess (so Python start-up and imports count); without it ``publish_lines`` runs in-process.
The simulated lines are cached in ``.local/bench-cache/`` and not timed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import HUBSTREAM, KafkaProbe, namespace
from bench.workload import simulated_file
from hubstream import topics
from hubstream.settings import PROJECT_ROOT, Settings
from producers.publish import publish_lines

AGENCY_TOPICS = (
    topics.POLICE_INTELLIGENCE,
    topics.PARTNER_INTELLIGENCE,
    topics.MISSING_EPISODES,
    topics.HUB_DECISIONS,
)
# New ACLs reach the broker's authorizer a moment after they are created; not timed.
SETTLE_S = 2.0


def _lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def one_run(base: Settings, path: Path, expected: int, run: str, *, cli: bool) -> float:
    """Seconds to publish ``path`` once into a fresh namespace; raises if anything went missing."""
    log_dir = PROJECT_ROOT / ".local" / "bench-logs" / run
    with namespace("publish", run, base, log_dir, database=False) as ns:
        time.sleep(SETTLE_S)
        started = time.perf_counter()
        if cli:
            done = subprocess.run(
                [HUBSTREAM, "publish", "mixed", "--file", str(path), "--no-progress"],
                env={**os.environ, **ns.env}, capture_output=True, text=True, check=False,
            )
            elapsed = time.perf_counter() - started
            if done.returncode != 0:
                raise RuntimeError(f"hubstream publish exited {done.returncode}: {done.stderr[-2000:]}")
        else:
            with path.open(encoding="utf-8") as handle:
                result = publish_lines(ns.settings, "mixed", handle, progress=False)
            elapsed = time.perf_counter() - started
            if result.rejected or result.published != expected:
                raise RuntimeError(
                    f"published {result.published}, rejected {result.rejected}: {result.problems[:5]}"
                )
        probe = KafkaProbe(ns.settings)
        try:
            landed = probe.total([ns.prefix + t.base_name for t in AGENCY_TOPICS])
        finally:
            probe.close()
        if landed != expected:
            raise RuntimeError(f"{landed} events on the agency topics, expected {expected}")
    return elapsed


def main() -> None:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0], epilog="\n\n".join(doc.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--events", type=int, default=50_000, help="simulated events (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="runs, each in a fresh namespace")
    parser.add_argument("--cli", action="store_true", help="time the `hubstream publish` command itself")
    parser.add_argument("--file", type=Path, help="publish this JSON-lines file instead of the simulation")
    args = parser.parse_args()

    base = Settings()
    path = args.file or simulated_file(PROJECT_ROOT / ".local" / "bench-cache", args.events)[0]
    expected = _lines(path)
    how = "hubstream publish mixed (subprocess)" if args.cli else "publish_lines (in-process)"
    print(f"{expected:,} events from {path}, {how}, security {base.kafka_security}", flush=True)
    rates: list[float] = []
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for n in range(args.repeat):
        seconds = one_run(base, path, expected, f"{stamp}-{n}", cli=args.cli)
        rates.append(expected / seconds)
        print(f"  run {n + 1}: {seconds:6.2f} s  {rates[-1]:>9,.0f} events/s", flush=True)
    spread = f"{min(rates):,.0f}..{max(rates):,.0f}"
    median = statistics.median(rates)
    print(f"best {max(rates):,.0f} events/s, median {median:,.0f}, spread {spread} over {len(rates)} runs")


if __name__ == "__main__":
    main()
