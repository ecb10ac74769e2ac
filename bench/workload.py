"""The events the benchmarks publish: a simulated county, a steady feed, a million distinct children.

Simulated events are generated once per size and kept as a JSON-lines file under
``.local/bench-cache/`` (the same format ``hubstream publish mixed`` reads), so a measurement
times publishing and processing, never the simulator.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import bar
from producers.simulate import simulate, write_jsonl

SEED = 1
START = date(2025, 1, 1)
DAYS = 365
# About 75,000 children over 365 days make a million events (producers.simulate).
EVENTS_PER_CHILD = 13.3


def children_for(events: int) -> int:
    return max(300, round(events / EVENTS_PER_CHILD * 1.05))


def simulated_file(cache_dir: Path, events: int) -> tuple[Path, dict[str, int]]:
    """A JSON-lines file of the first ``events`` simulated events, and the count per schema."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"sim-seed{SEED}-{events}.jsonl"
    counts_path = path.with_suffix(".counts.json")
    if path.exists() and counts_path.exists():
        counts: dict[str, int] = json.loads(counts_path.read_text())
        if sum(counts.values()) == events:
            return path, counts
    counter: Counter[str] = Counter()

    def counted() -> Iterator[tuple[str, dict[str, Any]]]:
        stream = simulate(SEED, START, DAYS, children=children_for(events))
        for schema, event in bar(
            itertools.islice(stream, events), total=events, desc="simulate", unit=" events"
        ):
            counter[schema] += 1
            yield schema, event

    partial = path.with_suffix(".partial")
    written = write_jsonl(counted(), partial)
    partial.rename(path)
    counts_path.write_text(json.dumps(dict(counter), sort_keys=True))
    if written < events:
        print(
            f"  the simulator gave {written:,} events, fewer than the {events:,} asked for", file=sys.stderr
        )
    return path, dict(counter)


def lines_of(path: Path, schemas: tuple[str, ...] | None = None) -> Iterator[str]:
    """The file's lines, optionally only those of the given schemas (a cheap prefix match)."""
    wanted = tuple(f'{{"schema":"{s}"' for s in schemas) if schemas else None
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if wanted is None or line.startswith(wanted):
                yield line


def steady_feed(count: int, seed: int = 2) -> list[tuple[str, dict[str, Any]]]:
    """``count`` simulated missing-episode and intelligence events, in event-time order."""
    wanted = ("MissingEpisodeEvent", "IntelligenceReport")
    # Hub decisions are a tenth of the simulation; size the county so the rest makes ``count``.
    stream = simulate(seed, START, DAYS, children=children_for(int(count * 1.15)))
    return list(itertools.islice(((s, e) for s, e in stream if s in wanted), count))


def _iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def distinct_children(count: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """One reported_missing event for each of ``count`` distinct children, a few seconds apart.

    Built from a simulated report so every field is realistic; only the keys and times change.
    Spread over 60 days of event time, so the rules keep every child's state (nothing is old
    enough to prune). Without a last-seen location: the state measured is the per-child state
    (a located report would also be held, per report, by the hotspot rule of its area).
    """
    template = next(
        e
        for s, e in simulate(SEED, START, 30, children=200)
        if s == "MissingEpisodeEvent" and e["kind"] == "reported_missing" and e["last_seen"]
    )
    first = datetime(2025, 3, 1, tzinfo=UTC)
    step = timedelta(days=60) / max(1, count)
    for i in range(count):
        at = first + step * i
        event = dict(template)
        event.update(
            event_id=f"bench-mem-event-{i:08d}",
            episode_id=f"bench-mem-episode-{i:08d}",
            person_key=f"pk_{0xBE0C000000000000 + i:016x}",
            nhs_number=None,
            last_seen=None,
            occurred_at=_iso(at),
            reported_at=_iso(at + timedelta(minutes=30)),
        )
        yield "MissingEpisodeEvent", event
