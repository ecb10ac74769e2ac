"""`hubstream demo`: a simulated county through the whole pipeline, and what came out.

It runs in its own namespace (topics prefixed `demo.`, database `hubstream_demo`), reset at
the start of every run, so it never mixes with anything else on the stack and gives the same
result each time for the same seed.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
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
            env=os.environ,
            stdout=log,
            stderr=subprocess.STDOUT,
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
    _section("The hub's web application, over the demo's store")
    url = start_web(settings)
    user, password = demo_sign_in(settings)
    click.secho(f"\nDone in {time.monotonic() - started:.0f}s.", bold=True)
    click.echo(f"  Open {url} and sign in as {user} (password {password}): every authority's concerns.")
    click.echo("  Practitioners see their own authority's: practitioner.city, practitioner.county,")
    click.echo(f"  practitioner.rutland; their passwords are in {_keycloak_file(settings)}.")
    click.echo("  `make down` stops it with the rest of the stack. The tracker from the command line:")
    click.echo(f"  HUBSTREAM_HUB_STORE_DSN='{settings.hub_store_dsn}' .local/venv/bin/hubstream alerts list")


WEB_PORT = int(os.environ.get("HUBSTREAM_WEB_PORT", "8400"))


def _web_pid_file(settings: Settings) -> Path:
    return settings.home / "demo-web.pid"


def _keycloak_file(settings: Settings) -> Path:
    return Path(os.environ.get("HUBSTREAM_SECRETS_DIR") or settings.home / "secrets") / "keycloak.json"


def demo_sign_in(settings: Settings) -> tuple[str, str]:
    """The demo's sign-in: the hub manager of the local realm, and its password."""
    users = json.loads(_keycloak_file(settings).read_text())["users"]
    return "manager", str(users["manager"])


def stop_web(settings: Settings) -> bool:
    """Stop the demo's web application, if it is running (its pid file names it)."""
    pid_file = _web_pid_file(settings)
    try:
        pid = int(pid_file.read_text())
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except (OSError, ValueError):
        pid_file.unlink(missing_ok=True)
        return False
    pid_file.unlink(missing_ok=True)
    if b"serve hub" not in command:  # the pid is another process's now
        return False
    os.killpg(pid, signal.SIGTERM)
    return True


def start_web(settings: Settings, *, timeout_s: float = 60.0) -> str:
    """``hubstream serve hub`` over the demo's database, left running after the demo; its URL."""
    stop_web(settings)
    host = f"host=127.0.0.1 port={settings.pg_port} dbname={DATABASE}"
    log_path = settings.home / "demo-web.log"
    with log_path.open("ab") as log:
        web = subprocess.Popen(
            [str(Path(sys.executable).parent / "hubstream"), "serve", "hub", "--port", str(WEB_PORT)],
            env={**os.environ, "HUBSTREAM_HUB_WEB_DSN": f"{host} user=hub_web"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    _web_pid_file(settings).write_text(str(web.pid))
    url = f"http://127.0.0.1:{WEB_PORT}/"
    deadline = time.monotonic() + timeout_s
    while True:
        if web.poll() is not None:
            raise RuntimeError(f"the web application exited with {web.returncode}; its log: {log_path}")
        try:
            with urllib.request.urlopen(url + "healthz", timeout=2) as answer:
                if answer.status == 200:
                    click.echo(f"  answering on {url} (log: {log_path})")
                    return url
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the web application did not answer on {url} in {timeout_s:.0f} s; log: {log_path}"
            )
        time.sleep(0.3)


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

    _section("Concerns on the hub's queue (one per subject and rule; alerts update them)")
    for rule, authority, count, alerts in _rows(
        settings,
        "SELECT rule, authority, count(*), sum(alert_count) FROM hub.concerns GROUP BY 1, 2 ORDER BY 1, 2",
    ):
        click.echo(f"  {rule:28} {authority:10} {count:>6,} concerns from {alerts:>6,} alerts")

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


if __name__ == "__main__":  # `python -m hubstream.demo stop-web` (make down)
    if sys.argv[1:] != ["stop-web"]:
        raise SystemExit("usage: python -m hubstream.demo stop-web")
    if stop_web(Settings()):
        print("demo web application stopped")
