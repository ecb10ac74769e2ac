"""The association rule on one busy entity: time to fold N reports about one vehicle, then the
cost of one report more.

    .local/venv/bin/python bench/association_entity.py [--reports 2000] [--children 2] [--days 90]

Reports come one an hour apart (in event-time order), each naming one of ``--children``
children in turn (2, the default, never makes the default 3 children qualify: the case where
every report stays unfired); the last report is the N+1-th, timed alone over ``--repeat``
fresh copies of the state.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.pop(0)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import time
from datetime import UTC, datetime, timedelta

from streams.rules import AssociationSettings, Entity, IntelligenceReport, association

CAR = Entity("vehicle", "AB12CDE")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def report(n: int, children: int, spacing: timedelta) -> IntelligenceReport:
    return IntelligenceReport(
        event_id=f"r{n:06d}", occurred_at=T0 + n * spacing, area="north", agency="police",
        children=(f"child-{n % children}",), locations=(), entities=(CAR,),
        handling_code=None, handling_conditions=None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--reports", type=int, default=2000)
    parser.add_argument("--children", type=int, default=2)
    parser.add_argument("--hours", type=float, default=1.0, help="hours between reports (default 1)")
    parser.add_argument("--repeat", type=int, default=20, help="times the N+1-th report is timed")
    args = parser.parse_args()
    settings = AssociationSettings()
    spacing = timedelta(hours=args.hours)
    reports = [report(n, args.children, spacing) for n in range(args.reports + 1)]
    state = association.initial(CAR.ref)
    alerts = 0
    started = time.process_time()
    for r in reports[:-1]:
        state, raised = association.apply(state, r, settings)
        alerts += len(raised)
    built = time.process_time() - started
    started = time.process_time()
    for _ in range(args.repeat):
        _, raised = association.apply(state, reports[-1], settings)
    further = (time.process_time() - started) / args.repeat
    print(f"{args.reports:,} reports, {args.children} children, one every {args.hours:g} h: "
          f"built in {built:.2f} s CPU ({alerts:,} alerts); report {args.reports + 1:,}: "
          f"{further * 1000:.2f} ms ({len(raised)} alerts)")


if __name__ == "__main__":
    main()
