"""The results table: each figure beside its goal, if it has one. Informational only."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

GIB_KIB = 1024 * 1024

Row = tuple[str, str, str, str]  # figure, value, goal, verdict


def _num(v: Any, fmt: str = ",.0f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, fmt)


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v * 1000:,.0f} ms"


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("met" if ok else "MISSED")


def _e2e(m: dict[str, Any]) -> list[Row]:
    ceiling = m.get("ceiling", {}).get("events_per_s")
    drain = m.get("consumer_drain", {})
    e2e = m["events_per_s"]
    finished = m.get("finished", True)
    if finished:
        value = f"{_num(e2e)}  ({m['events']:,} in {m['seconds']:.1f} s)"
        after = f"{m['last_row_after_worker_s']:.1f} s"
    else:
        value = (
            f"< {_num(e2e)}  (NOT FINISHED in {m['seconds']:.0f} s: worker read {m['worker_inputs_done']:,} "
            f"of {m['events']:,} inputs, {_num(m.get('worker_behind_at_cap'))} msgs still behind)"
        )
        after = "-"
    ratio = m.get("ratio_to_ceiling")
    return [
        ("1 end-to-end replay, events/s", value, ">= 20,000", _verdict(e2e >= 20_000)),
        ("1   publish phase, events/s", _num(m["publish_events_per_s"]), "", ""),
        (
            "1   worker phase, events/s",
            f"{_num(m['worker_events_per_s'])}  ({m.get('workers', 1)} worker(s), CPU "
            f"{_num(m.get('worker_cpu_utilisation'), '.0%')} of a core, "
            f"behind at publish end: {_num(m.get('worker_behind_at_publish_end'))})",
            "",
            "",
        ),
        ("1   last row after worker caught up", after, "", ""),
        *_cpu(m),
        (
            "1   hub consumer alone, rows/s",
            f"{_num(drain.get('rows_per_s'))}  ({_num(drain.get('rows'))} rows)",
            "",
            "",
        ),
        (
            "1   alert rows / decision rows / health flags",
            f"{m['alert_rows']:,} / {m['decision_rows']:,} / {m['health_flag_rows']:,}",
            "",
            "",
        ),
        # A compressed replay refuses partner reports as late (see bench/README.md): shown, not hidden.
        ("1   dead letters", _num(m.get("dead_letters")), "", ""),
        ("2 plain-consumer ceiling, events/s", _num(ceiling), "", ""),
        (
            "2 end-to-end / ceiling",
            _num(ratio, ".3f"),
            ">= 0.50",
            _verdict(None if ratio is None else ratio >= 0.5),
        ),
    ]


def _cpu(m: dict[str, Any]) -> list[Row]:
    used = m.get("cpu_core_seconds")
    if not used:
        return []
    parts = {k: v for k, v in used.items() if k != "machine"}
    machine, wall, cpus = used["machine"], m["seconds"], m.get("cpus") or 1
    return [
        (
            "1   CPU by part, core-seconds",
            ", ".join(f"{k} {v:,.1f}" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])),
            "",
            "",
        ),
        (
            "1   CPU of the whole machine",
            f"{machine:,.1f} core-s of {cpus * wall:,.1f} ({machine / (cpus * wall):.0%} busy), "
            f"{machine / m['events'] * 1e6:,.0f} µs per event",
            "",
            "",
        ),
    ]


def _peer(m: dict[str, Any]) -> list[Row]:
    ours, peer = m["worker"], m["quix"]
    alone = m.get("worker_repeat_missing", {})
    ratio = m.get("ratio")
    return [
        (
            "3 quixstreams peer, missing topic, events/s",
            f"{_num(peer['events_per_s'])}  ({peer['messages']:,} msgs)",
            "",
            "",
        ),
        (
            "3 our worker, repeat_missing alone, events/s",
            f"{_num(alone.get('events_per_s'))}  ({alone.get('messages', 0):,} msgs)",
            "",
            "",
        ),
        ("3 ours / peer", _num(ratio, ".2f"), ">= 1.00", _verdict(None if ratio is None else ratio >= 1.0)),
        (
            "3 our worker, every rule on the topic, events/s",
            f"{_num(ours['events_per_s'])}  ({ours['messages']:,} msgs)",
            "",
            "",
        ),
        ("3 ours (every rule) / peer", _num(m.get("ratio_all_rules"), ".2f"), "", ""),
    ]


def _latency(m: dict[str, Any]) -> list[Row]:
    row, alert = m["publish_to_row"], m["publish_to_alert"]
    p99 = row.get("p99")
    return [
        (
            f"4 publish at {m['target_rate']:,}/s for {m['seconds_target']} s: achieved",
            f"{_num(m['achieved_rate'])} events/s, {m['published']:,} events",
            "",
            "",
        ),
        (
            "4 publish -> hub row p50 / p99 / max",
            f"{_ms(row.get('p50'))} / {_ms(p99)} / {_ms(row.get('max'))}  ({row.get('alerts', 0):,} alerts)",
            "p99 <= 500 ms",
            _verdict(None if p99 is None else p99 <= 0.5),
        ),
        (
            "4 publish -> alert p50 / p99 / max",
            f"{_ms(alert.get('p50'))} / {_ms(alert.get('p99'))} / {_ms(alert.get('max'))}",
            "",
            "",
        ),
    ]


def _memory(m: dict[str, Any]) -> list[Row]:
    hwm = m["worker_vmhwm_kib"]
    return [
        (
            f"5 worker peak RSS (VmHWM), {m['children']:,} children",
            f"{hwm / 1024:,.0f} MiB  (idle {m['idle_vmhwm_kib'] / 1024:,.0f} MiB)",
            "<= 1 GiB (1M children)",
            _verdict(hwm <= GIB_KIB) if m["children"] >= 1_000_000 else "(not 1M)",
        ),
    ]


SECTIONS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "e2e": _e2e,
    "peer": _peer,
    "latency": _latency,
    "memory": _memory,
}


def table(results: dict[str, Any]) -> str:
    rows: list[Row] = []
    for name, figures in results["measurements"].items():
        if "error" in figures:
            rows.append((f"{name}: failed", figures["error"][:70], "", ""))
            continue
        try:
            rows += SECTIONS[name](figures)
        except (KeyError, TypeError) as exc:
            rows.append((f"{name}: incomplete figures", repr(exc)[:70], "", ""))
    header: Row = ("figure", "value", "goal", "")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    settings = results["settings"]
    head = (
        f"hubstream bench, run {results['run']}, commit {results['commit']}, {results['host']['cpus']} cpus, "
        f"{settings['events']:,} events, {results.get('wall_seconds', 0):.0f} s"
    )
    return "\n".join([head, "", *lines])
