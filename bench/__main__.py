"""Benchmarks of the hubstream pipeline on the local stack: throughput, ceiling, peer, latency, memory.

    python -m bench                 # every measurement, 1,000,000 events (about 17 minutes today)
    python -m bench --quick         # a 50,000-event smoke run of every measurement
    python -m bench --only latency  # one measurement (repeat --only for several)
    python -m bench --only e2e --workers 2  # the replay with two worker processes

Prints a table and writes bench/results/<timestamp>.json. Each measurement runs in its own
namespace (topics ``bench-<name>-<run>.``, database ``bench_<run>``) and removes it afterwards.
Nothing here passes or fails: the goals are shown beside the figures. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import Context, Namespace, environment, leftover_namespaces
from bench.report import table
from hubstream.settings import ASSIGNORS, DEFAULT_ASSIGNOR, PROJECT_ROOT, load

MEASUREMENTS = ("e2e", "peer", "latency", "memory")
RESULTS = Path(__file__).resolve().parent / "results"


def _parser() -> argparse.ArgumentParser:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=doc.split("\n\n")[0],
        epilog="\n\n".join(doc.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--events",
        type=int,
        default=1_000_000,
        help="simulated events for the replay and the peer comparison (default: %(default)s)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 50,000 events, 15 s of latency, 50,000 children for memory",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=MEASUREMENTS,
        metavar="NAME",
        help=f"run only this measurement (one of: {', '.join(MEASUREMENTS)}); e2e includes "
        "the plain-consumer ceiling and the consumer drain; repeatable, run in the order given",
    )
    parser.add_argument(
        "--latency-rate", type=int, default=1000, help="events/s for the latency run (default: %(default)s)"
    )
    parser.add_argument(
        "--latency-seconds", type=int, default=None, help="length of the latency run (default: 60, quick: 15)"
    )
    parser.add_argument(
        "--memory-children",
        type=int,
        default=None,
        help="distinct children for the memory run (default: 1,000,000, quick: 50,000)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes in the end-to-end replay, one consumer group (default: %(default)s)",
    )
    parser.add_argument(
        "--assignor",
        choices=ASSIGNORS,
        default=DEFAULT_ASSIGNOR,
        help="how the replay's workers share partitions (hubstream worker --assignor; default: "
        "%(default)s); with --workers 2, range splits every topic between them",
    )
    parser.add_argument(
        "--idle-first",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="start the replay this long after the pipeline is up, so that the worker has reported "
        "its sources idle: a replay into a running worker (default: at once)",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="SECONDS",
        help="sample the worker with py-spy for this long during the replay (perturbs its figures)",
    )
    parser.add_argument(
        "--max-stage-seconds",
        type=float,
        default=None,
        help="stop a stage still running after this long and report its progress so far "
        "(default: 1200, quick: 300)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="results file (default: bench/results/<timestamp>.json)"
    )
    parser.add_argument(
        "--remove-leftovers",
        action="store_true",
        help="first delete what killed bench runs left on the stack (topics, groups, ACLs, subjects, "
        "databases); without it they are only reported",
    )
    return parser


def _git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=PROJECT_ROOT, capture_output=True, text=True
        )
        return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    # Stopped from outside (or with Ctrl-C in a background job): unwind, so every namespace is removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    run = stamp.lower().replace("t", "", 1).rstrip("z")  # e.g. 20250101120000: topic- and database-safe
    events = 50_000 if args.quick else args.events
    base = load()  # also points libpq at the local stack's password file, as the CLI does
    ctx = Context(
        run=run,
        base=base,
        log_dir=base.home / "bench-logs" / run,
        cache_dir=base.home / "bench-cache",
        events=events,
        quick=args.quick,
        latency_rate=args.latency_rate,
        latency_seconds=args.latency_seconds or (15 if args.quick else 60),
        memory_children=args.memory_children or (50_000 if args.quick else 1_000_000),
        profile_seconds=args.profile,
        workers=args.workers,
        idle_first_s=args.idle_first,
        assignor=args.assignor,
        stage_cap_s=args.max_stage_seconds or (300.0 if args.quick else 1200.0),
    )
    chosen = list(dict.fromkeys(args.only)) if args.only else list(MEASUREMENTS)  # in the order asked
    results: dict[str, Any] = {
        "run": run,
        "started": stamp,
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
        "commit": _git_commit(),
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()},
        "settings": {k: v for k, v in vars(ctx).items() if k not in ("base", "log_dir", "cache_dir")},
        "logs": str(ctx.log_dir),
        "measurements": {},
    }
    results["leftovers"] = _leftovers(ctx, remove=args.remove_leftovers)
    out = args.out or RESULTS / f"{stamp}.json"
    started = time.monotonic()
    for name in chosen:
        print(f"== {name}", file=sys.stderr, flush=True)
        began = time.monotonic()
        try:
            figures = _runner(name)(ctx)
        except Exception as exc:
            traceback.print_exc()
            figures = {"error": f"{type(exc).__name__}: {exc}"}
        figures["wall_seconds"] = round(time.monotonic() - began, 1)
        results["measurements"][name] = figures
        _write(out, results)  # after each measurement, so a later failure keeps the earlier figures
        print(f"   {name} done in {figures['wall_seconds']:.0f} s", file=sys.stderr, flush=True)
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    _write(out, results)
    print(table(results))
    print(f"\nresults: {out.relative_to(PROJECT_ROOT) if out.is_relative_to(PROJECT_ROOT) else out}")
    print(f"logs:    {ctx.log_dir}")


def _leftovers(ctx: Context, *, remove: bool) -> list[str]:
    """Namespaces that killed runs left behind (a run removes its own on leaving). They are not
    idle ballast: once, 86 such topics made every latency run's hub consumer lose its session."""

    found = leftover_namespaces(ctx.base, ctx.run)
    if found and not remove:
        print(
            f"warning: {len(found)} namespaces left by killed runs are still on the stack "
            f"({', '.join(found[:4])}{', ...' if len(found) > 4 else ''}); they can slow the broker "
            "and skew these figures: rerun with --remove-leftovers to delete them first",
            file=sys.stderr,
        )
    if remove:
        for prefix in found:
            name, run = prefix.removeprefix("bench-").rstrip(".").rsplit("-", 1)
            ns = Namespace(name, run, ctx.base, ctx.log_dir)
            ns.databases.append(ns.database)
            with environment(ns.env):
                for problem in ns.cleanup():
                    print(f"  cleanup of {prefix}: {problem}", file=sys.stderr)
            print(f"removed the leftover namespace {prefix}", file=sys.stderr)
    return found


def _runner(name: str) -> Callable[[Context], dict[str, Any]]:
    if name == "e2e":
        from bench import e2e

        return e2e.run
    if name == "peer":
        from bench import peer

        return peer.run
    if name == "latency":
        from bench import latency

        return latency.run
    from bench import memory

    return memory.run


def _write(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
