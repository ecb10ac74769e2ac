"""Same run, same history: publish and worker throughput over SASL_SSL against plaintext.

Needs the stack started with the development listener as well:
    HUBSTREAM_KAFKA_PLAINTEXT=1 python3 deploy/local/stack.py up
then: .local/venv/bin/python bench/secure_vs_plaintext.py [--children N] [--days D]
Worker figures include its start-up (a few seconds), so compare them with each other only.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hubstream.progress import wait_for_group, worker_topics
from hubstream.settings import Settings
from producers.publish import publish_lines
from producers.simulate import simulate
from tests.support.stack import namespace


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--children", type=int, default=800)
    parser.add_argument("--days", type=int, default=120)
    args = parser.parse_args()
    events = list(simulate(11, date(2025, 1, 1), args.days, children=args.children))
    text = "".join(json.dumps({"schema": s, "event": e}) + "\n" for s, e in events)
    results: dict[str, dict[str, float]] = {}
    for mode in ("plaintext", "sasl_ssl"):
        os.environ["HUBSTREAM_KAFKA_SECURITY"] = mode
        with namespace(Settings()) as ns:
            started = time.monotonic()
            publish_lines(ns.settings, "mixed", io.StringIO(text), progress=False)
            published = time.monotonic()
            ns.start_worker()
            group = f"{ns.prefix}hubstream-worker"
            wait_for_group(ns.settings, group, worker_topics(group), timeout_s=1800)
            done = time.monotonic()
        results[mode] = {
            "events": len(events),
            "publish_events_per_s": round(len(events) / (published - started)),
            "worker_events_per_s_incl_start": round(len(events) / (done - published)),
        }
        print(mode, results[mode], flush=True)
    ratio = results["sasl_ssl"]["publish_events_per_s"] / results["plaintext"]["publish_events_per_s"]
    print(f"secure/plaintext publish ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
