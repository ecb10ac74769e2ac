"""`hubstream demo`: a simulated county through the whole pipeline, and what came out.

It runs in its own namespace (topics prefixed `demo.`, database `hubstream_demo`), reset at
the start of every run, so it never mixes with anything else on the stack and gives the same
result each time for the same seed.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import click
import psycopg2
from tqdm import tqdm  # tqdm ships no type information

from hubstream import kafka, kafka_security
from hubstream.kafka import create_topics
from hubstream.progress import wait_for_group, worker_topics
from hubstream.retry import retrying
from hubstream.settings import Settings

PREFIX = "demo."
DATABASE = "hubstream_demo"
BAD_LINES = (
    '{"schema": "MissingEpisodeEvent", "event": {"event_id": "bad-1", "kind": "reported_missing"}}\n',
    '{"schema": "HubDecision", "event": {"event_id": "bad-2", "kind": "case_opened", "person_key": "pk_1",'
    ' "nhs_number": "1234567890"}}\n',
)


def _section(title: str) -> None:
    click.secho(f"\n== {title}", bold=True)


def _demo_env(settings: Settings) -> dict[str, str]:
    host = f"host=127.0.0.1 port={settings.pg_port} dbname={DATABASE}"
    return {
        "HUBSTREAM_TOPIC_PREFIX": PREFIX,
        "HUBSTREAM_PG_DSN": f"{host} user=hubstream",
        "HUBSTREAM_HUB_STORE_DSN": f"{host} user=hub_store",
        "HUBSTREAM_HEALTH_STORE_DSN": f"{host} user=health_store",
    }


def _reset(settings: Settings, admin_dsn: str) -> None:
    admin = kafka.admin(settings)

    def left() -> list[str]:
        return [t for t in retrying("list_topics", admin.list_topics) if t.startswith(PREFIX)]

    try:
        old = left()
        if old:
            kafka.delete_topics(admin, old)
            deadline = time.monotonic() + 30
            while left() and time.monotonic() < deadline:
                time.sleep(0.5)
        groups = [g for g, *_ in retrying("list_groups", admin.list_groups) if str(g).startswith(PREFIX)]
        if groups:
            retrying(f"delete_groups {', '.join(groups)}", lambda: admin.delete_groups(groups))
    finally:
        admin.close()
    conn = psycopg2.connect(admin_dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
            cur.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        conn.close()


def run_demo(base: Settings, *, seed: int, days: int, children: int) -> None:
    from consumers.run import prepare_database, run_sink
    from producers.publish import publish_lines
    from producers.simulate import simulate

    admin_dsn = base.pg_dsn  # read before the demo's own DSNs are set
    os.environ.update(_demo_env(base))
    settings = Settings()
    started = time.monotonic()

    _section(f"Simulated county: seed {seed}, {children} children, {days} days from 2025-01-01")
    events = list(simulate(seed, date(2025, 1, 1), days, children=children))
    for schema, count in sorted(Counter(s for s, _ in events).items()):
        click.echo(f"  {schema:22} {count:>8,}")

    _section("Publishing (every line validated; bad lines go to the dead-letter topic)")
    _reset(settings, admin_dsn)
    create_topics(settings)
    if settings.kafka_security != "plaintext":
        admin = kafka.admin(settings)
        try:
            kafka_security.apply_acls(admin, PREFIX)  # the demo namespace's own grants
        finally:
            admin.close()
    prepare_database(settings)
    lines = [json.dumps({"schema": s, "event": e}) + "\n" for s, e in events] + list(BAD_LINES)
    result = publish_lines(settings, "mixed", io.StringIO("".join(lines)), progress=True)
    click.echo(f"  published {result.published:,}, rejected {result.rejected}")
    for problem in result.problems:
        click.echo(f"  rejected: {problem}")

    _section("Stream worker (repeat missing, return interview, hotspot, association, health flags)")
    group = f"{PREFIX}hubstream-worker"
    log_path = settings.home / "demo-worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [str(Path(sys.executable).parent / "hubstream"), "worker", "--metrics-port", "0"],
            env=os.environ, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            with tqdm(desc="  worker", unit=" msgs", file=sys.stderr) as bar:
                done = {"most": 0}

                def show(behind: int) -> None:
                    # The bar counts down the lag: total is the most it has been behind.
                    done["most"] = max(done["most"], behind)
                    bar.total = done["most"]
                    bar.n = done["most"] - behind
                    bar.refresh()

                def alive() -> None:
                    if worker.poll() is not None:
                        raise RuntimeError(f"the worker exited with {worker.returncode}; its log: {log_path}")

                wait_for_group(
                    settings, group, worker_topics(group), timeout_s=600, on_lag=show, still_running=alive
                )
        except TimeoutError:
            click.echo(f"  the worker did not catch up; its log: {log_path}", err=True)
            raise
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    click.echo(f"  caught up (log: {log_path})")

    _section("Consumers: alerts and decisions to the CSE tracker, flags to the health store")
    for store in ("hub", "health"):
        stats = run_sink(settings, store, idle_polls_before_stop=4)
        click.echo(
            f"  {store:6} {stats.rows:>7,} rows in {stats.batches} transactions,"
            f" {stats.dead_letters} dead letters"
        )

    _print_results(settings)
    click.secho(f"\nDone in {time.monotonic() - started:.0f}s. Explore it with, for example:", bold=True)
    click.echo(f"  HUBSTREAM_HUB_STORE_DSN='{settings.hub_store_dsn}' .local/venv/bin/hubstream alerts list")


def _rows(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    conn = psycopg2.connect(settings.pg_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


def _print_results(settings: Settings) -> None:
    from consumers.fhir import to_fhir_flag
    from consumers.queries import show_flags

    _section("Alerts on the CSE tracker, per rule")
    for rule, severity, count in _rows(
        settings, "SELECT rule, severity, count(*) FROM hub.alert_flags GROUP BY 1, 2 ORDER BY 1, 2"
    ):
        click.echo(f"  {rule:28} {severity:7} {count:>6,}")

    _section("Newest five alerts (triage status new)")
    for alert_id, rule, subject, raised_at, n in _rows(
        settings,
        "SELECT alert_id, rule, subject, raised_at, cardinality(evidence) FROM hub.alert_flags"
        " ORDER BY raised_at DESC, alert_id LIMIT 5",
    ):
        click.echo(f"  {raised_at:%Y-%m-%d %H:%M}Z  {rule:26} {subject:28} {n} evidence  {alert_id}")

    _section("Children on the CSE tracker (from hub decisions)")
    for status, risk, count in _rows(
        settings,
        "SELECT case_status, coalesce(risk_level, '-'), count(*) FROM hub.children"
        " GROUP BY 1, 2 ORDER BY 1, 2",
    ):
        click.echo(f"  {status:7} risk {risk:7} {count:>5}")

    _section("Health CSE flags (keyed on NHS number; nothing else reaches health)")
    for status, count in _rows(
        settings, "SELECT status, count(*) FROM health.cse_flags GROUP BY 1 ORDER BY 1"
    ):
        click.echo(f"  {status:9} {count:>5}")
    sample = _rows(
        settings, "SELECT nhs_number FROM health.cse_flags ORDER BY status DESC, updated_at, flag_id LIMIT 1"
    )
    if sample:
        flags = show_flags(settings, sample[0][0], reader="hubstream-demo", purpose="demonstration read")
        click.echo("  one flag as a FHIR R4 Flag resource (this read is in the access log):")
        click.echo("  " + json.dumps(to_fhir_flag(flags[0]), indent=2).replace("\n", "\n  "))

    _section("Accountability")
    [(writes, reads)] = _rows(
        settings,
        "SELECT count(*) FILTER (WHERE action = 'write'), count(*) FILTER (WHERE action = 'read')"
        " FROM audit.access_log",
    )
    click.echo(f"  access log: {writes:,} writes, {reads} reads recorded (append-only)")
