"""The `hubstream` command: one entry point, a subcommand per job, `--help` on each."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import click

from hubstream import settings as settings_module
from hubstream import topics as topic_catalogue


def _settings() -> settings_module.Settings:
    return settings_module.load()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", default="INFO", show_default=True, help="DEBUG, INFO, WARNING or ERROR.")
def cli(log_level: str) -> None:
    """hubstream: multi-agency child-safeguarding event streams.

    Soft intelligence and missing episodes in; hub alerts, tracker flags and health CSE flags out.
    Settings come from HUBSTREAM_* environment variables (see the README).
    """
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # The client libraries are chatty at INFO; their warnings still show.
    for noisy in ("kafka",):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


# -- topics -------------------------------------------------------------------------------


@cli.group()
def topics() -> None:
    """Create and describe the Kafka topics hubstream uses."""


@topics.command("create")
def topics_create() -> None:
    """Create every catalogued topic that does not exist yet (idempotent), then wait until the
    broker's group and transaction coordinators answer, so the first group starts at once."""
    from hubstream.kafka import create_topics, warm_coordinators

    settings = _settings()
    created = create_topics(settings)
    click.echo(f"topics: {len(created)} created, {len(topic_catalogue.ALL) - len(created)} already there")
    warm_coordinators(settings)
    click.echo("coordinators: group and transaction coordinators answer")


@topics.command("list")
def topics_list() -> None:
    """Print the topic catalogue: name, schema, key, partitions, retention, writers and readers."""
    for t in topic_catalogue.ALL:
        retention = "forever" if t.retention_ms < 0 else f"{t.retention_ms // topic_catalogue.DAY_MS} days"
        click.echo(
            f"{t.name:34} {t.schema:20} partitions={t.partitions} retention={retention} "
            f"cleanup={t.cleanup_policy}\n    key: {t.key}\n    written by: {t.writers}; read by: {t.readers}"
        )


# -- publish and simulate -----------------------------------------------------------------


@cli.command()
@click.argument("event_kind")
@click.option("--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="JSON lines to publish; standard input when omitted.")
@click.option("--topic", default=None, help="Override the topic the kind is routed to.")
@click.option(
    "--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal)."
)
@click.option(
    "--as", "principal", default=None,
    help="Kafka principal to publish as (police, partner-<agency>, hub). Default: each event as its own"
    " agency's principal, for simulations run with every agency's credentials.",
)
def publish(
    event_kind: str, path: Path | None, topic: str | None, progress: bool | None, principal: str | None
) -> None:
    """Validate and publish events of EVENT_KIND from JSON lines.

    EVENT_KIND is one of: police-intelligence, partner-intelligence, missing-episode, hub-decision,
    or `mixed` for simulator output (each line says its kind). Every line is checked against its
    schema before anything is sent; bad lines are reported (line, field, value), sent to the
    dead-letter topic with the reason, and make the exit status 1. So are lines that are not
    UTF-8 or not JSON, and lines whose message would be over the topic's size limit
    (topics.MAX_KEY_AND_VALUE_BYTES); blank lines are skipped.
    """
    from producers.publish import KINDS, DeliveryError, publish_lines
    from schemas import RegistryError

    if event_kind not in KINDS:
        raise click.BadParameter(f"must be one of {', '.join(KINDS)}", param_hint="EVENT_KIND")
    # Bytes, not text: a line that is not UTF-8 is a bad line, not the end of the input.
    stream: BinaryIO = path.open("rb") if path else sys.stdin.buffer
    try:
        with stream:
            result = publish_lines(
                _settings(), event_kind, stream, topic=topic, progress=progress, principal=principal
            )
    except (DeliveryError, RegistryError) as exc:
        raise click.ClickException(f"publishing stopped: {exc}") from None
    for problem in result.problems:
        click.echo(problem, err=True)
    click.echo(f"published {result.published}, rejected {result.rejected} (sent to dead letters)")
    sys.exit(1 if result.rejected else 0)


@cli.command()
@click.option("--seed", type=int, default=1, show_default=True, help="Same seed, same county, same events.")
@click.option("--start", default="2025-01-01", show_default=True, help="First day (UTC), YYYY-MM-DD.")
@click.option("--days", type=int, default=365, show_default=True, help="How many days of history.")
@click.option("--children", type=int, default=400, show_default=True, help="Children in the county.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write JSON lines here; standard output when omitted.")
def simulate(seed: int, start: str, days: int, children: int, out: Path | None) -> None:
    """Generate a realistic county's events as JSON lines that `hubstream publish mixed` accepts."""
    from datetime import date

    from producers.simulate import simulate as simulated_events
    from producers.simulate import write_jsonl

    try:
        first_day = date.fromisoformat(start)
    except ValueError:
        raise click.BadParameter(f"expected YYYY-MM-DD, got {start!r}", param_hint="--start") from None
    target: TextIO = out.open("w", encoding="utf-8") if out else sys.stdout
    with target:
        count = write_jsonl(simulated_events(seed, first_day, days, children), target)
    click.echo(f"simulated {count} events", err=True)


# -- stream worker and consumers ------------------------------------------------------------


@cli.command()
@click.option(
    "--metrics-port", type=int, default=19101, show_default=True, help="Serve /metrics here; 0 = off."
)
@click.option(
    "--max-batch", type=click.IntRange(1, 100_000), default=5000, show_default=True,
    help="Most messages handled, written and committed together.",
)
@click.option(
    "--commit-interval", type=click.FloatRange(0, 60), default=None,
    help="Seconds between transaction commits (outputs, changelogs and offsets together; default "
    "0.1, Kafka Streams' under exactly-once; under a backlog, once per batch); a "
    "crashed worker handles at most this much again, and readers that read committed (the "
    "sinks) see alerts at most this much later. Each commit waits for the broker, so shorter "
    "intervals cost replay throughput.",
)
@click.option(
    "--session-timeout", type=click.FloatRange(6, 300), default=45.0, show_default=True,
    help="Seconds without a heartbeat before the group gives this worker's partitions to another "
    "(a frozen or paused worker is then fenced: its transaction cannot commit).",
)
@click.option(
    "--rules", default=None, metavar="RULE[,RULE...]",
    help="Run only these rules (repeat_missing, return_interview, hotspot, association, "
    "health_flags), e.g. to replay history after one of them changed; needs its own "
    "HUBSTREAM_WORKER_ID starting hubstream-worker. Default: all.",
)
@click.option(
    "--assignor", type=click.Choice(settings_module.ASSIGNORS), default=settings_module.DEFAULT_ASSIGNOR,
    show_default=True,
    help="How a group's workers share partitions; every worker of a group must use the same. "
    "cooperative-sticky moves only the partitions that change hands, but balances counts, not "
    "topics (one worker may get every source partition); range splits every topic evenly and "
    "reads all state back at each rebalance. Use range with several workers on several cores.",
)
def worker(
    metrics_port: int, max_batch: int, commit_interval: float | None, session_timeout: float,
    rules: str | None, assignor: str,
) -> None:
    """Start the stream processors: correlate agency events into alerts and health flags.

    Several workers share the work through Kafka partitions (give each its own --metrics-port).
    State is kept in memory and in compacted changelog topics, read back when a worker is
    given a partition. Stop with Ctrl-C or SIGTERM: the batch in hand is finished and committed
    first. Exactly once: outputs, changelogs and offsets commit in one Kafka transaction. On any
    failure (the broker, a lost partition, a fenced transaction) the open transaction is aborted
    and the worker exits with status 1 for its supervisor to restart it (deploy/supervisor/).

    To replay history under a changed rule, run that rule alone in a group of its own (a new
    group starts from the beginning of the topics; alerts under unchanged settings keep their
    ids and the case stores write each once, changed settings give new ids):

        HUBSTREAM_WORKER_ID=hubstream-worker-replay-2026-11 hubstream worker --rules repeat_missing
    """
    from hubstream.metrics import serve
    from streams.engine import COMMIT_EVERY_S
    from streams.worker import choose_rules, run_worker

    if rules is not None:
        try:
            choose_rules([name.strip() for name in rules.split(",")])
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--rules") from None
    serve(metrics_port)
    code = run_worker(
        max_batch=max_batch, assignor=assignor,
        commit_every_s=COMMIT_EVERY_S if commit_interval is None else commit_interval,
        session_timeout_s=session_timeout,
    )
    sys.exit(code)


@cli.group()
def consume() -> None:
    """Run a consumer that writes into a case store, exactly once."""


def _run_sink(store: str, idle_stop: int | None, metrics_port: int) -> None:
    from consumers.run import run_sink
    from hubstream.metrics import serve

    serve(metrics_port)
    stats = run_sink(_settings(), store, idle_polls_before_stop=idle_stop)
    click.echo(
        f"{store}: {stats.rows} rows written, {stats.dead_letters} dead letters, {stats.db_errors} db errors"
    )


@consume.command("hub")
@click.option("--stop-when-idle", type=int, default=None, help="Stop after this many empty polls in a row.")
@click.option(
    "--metrics-port", type=int, default=19102, show_default=True, help="Serve /metrics here; 0 = off."
)
def consume_hub(stop_when_idle: int | None, metrics_port: int) -> None:
    """Alerts and hub decisions into the hub case store (the CSE tracker)."""
    _run_sink("hub", stop_when_idle, metrics_port)


@consume.command("health")
@click.option("--stop-when-idle", type=int, default=None, help="Stop after this many empty polls in a row.")
@click.option(
    "--metrics-port", type=int, default=19103, show_default=True, help="Serve /metrics here; 0 = off."
)
def consume_health(stop_when_idle: int | None, metrics_port: int) -> None:
    """Health CSE flags into the health flag store, keyed on NHS number."""
    _run_sink("health", stop_when_idle, metrics_port)


# -- the hub's own commands -----------------------------------------------------------------


def _print_rows(rows: list[dict[str, Any]], fmt: str, columns: list[str]) -> None:
    if fmt == "json":
        click.echo(json.dumps(rows, default=str, indent=2))
        return
    if not rows:
        click.echo("(none)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    click.echo("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        click.echo("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns))


@cli.group()
def alerts() -> None:
    """List and triage alerts on the CSE tracker."""


@alerts.command("list")
@click.option("--status", type=click.Choice(["new", "acknowledged", "actioned", "closed"]), default=None)
@click.option(
    "--rule", default=None, help="repeat_missing, return_interview_overdue, hotspot, association, ..."
)
@click.option("--area", default=None)
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def alerts_list(status: str | None, rule: str | None, area: str | None, limit: int, fmt: str) -> None:
    """Alerts on the tracker, newest event time first."""
    from consumers.queries import list_alerts

    rows = list_alerts(_settings(), status=status, rule=rule, area=area, limit=limit)
    _print_rows(
        rows,
        fmt,
        ["alert_id", "rule", "severity", "subject", "area", "raised_at", "triage_status", "evidence"],
    )


def _triage(status: str) -> click.Command:
    @click.command(status_name := {"acknowledged": "ack", "actioned": "action", "closed": "close"}[status])
    @click.argument("alert_id")
    @click.option("--by", "actor", required=True, help="Who is doing this (recorded in the history).")
    @click.option("--note", default=None, help="Why, recorded in the history.")
    def command(alert_id: str, actor: str, note: str | None) -> None:
        from consumers.queries import triage

        previous = triage(_settings(), alert_id, status, actor, note)
        click.echo(f"{alert_id}: {previous} -> {status}")

    command.help = f"Mark an alert {status} ({status_name}), with who and why in its history."
    return command


for _status in ("acknowledged", "actioned", "closed"):
    alerts.add_command(_triage(_status))


@alerts.command("erase")
@click.argument("alert_id")
@click.option("--reason", required=True, help="Why this CSE record must go (kept in the access log).")
@click.option(
    "--dsn", envvar="HUBSTREAM_ERASER_DSN", required=True,
    help="Connection as a person holding the cse_eraser role (env HUBSTREAM_ERASER_DSN).",
)
def alerts_erase(alert_id: str, reason: str, dsn: str) -> None:
    """Erase an alert from the tracker. CSE records are retained: this needs the cse_eraser role
    and a reason, and the erasure itself is logged."""
    import psycopg2

    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT hub.erase_alert(%s, %s)", (alert_id, reason))
    except psycopg2.Error as exc:
        raise click.ClickException(str(exc).strip().splitlines()[0]) from None
    finally:
        conn.close()
    click.echo(f"{alert_id}: erased; the erasure is in the access log")


@cli.group()
def flags() -> None:
    """Read health CSE flags (every read is logged)."""


@flags.command("show")
@click.option("--nhs-number", required=True, help="The child's 10-digit NHS number.")
@click.option("--reader", default="hub-cli", show_default=True, help="Who is reading (access log).")
@click.option("--purpose", default="safeguarding enquiry", show_default=True, help="Why (access log).")
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "fhir"]), default="table", show_default=True
)
def flags_show(nhs_number: str, reader: str, purpose: str, fmt: str) -> None:
    """Show a child's CSE flags, as a table, JSON, or FHIR R4 Flag resources."""
    from consumers.fhir import to_fhir_flag
    from consumers.queries import show_flags

    rows = show_flags(_settings(), nhs_number, reader=reader, purpose=purpose)
    if fmt == "fhir":
        click.echo(json.dumps([to_fhir_flag(r) for r in rows], indent=2))
    else:
        _print_rows(
            rows, fmt, ["flag_id", "status", "code", "display", "period_start", "period_end", "status_reason"]
        )


@cli.group()
def cases() -> None:
    """Record hub decisions (they are published as events on the hub-decisions topic)."""


def _decision_command(kind: str, help_text: str) -> click.Command:
    @click.command(kind.replace("_", "-"), help=help_text)
    @click.option("--child", "child_key", required=True, help="The child's pseudonymous key.")
    @click.option("--nhs-number", default=None, help="The child's NHS number (needed for a health flag).")
    @click.option("--risk", type=click.Choice(["low", "medium", "high"]), default=None)
    @click.option("--reason", default=None, help="Why (required to close a case).")
    @click.option("--by", "decided_by", required=True, help="Who decided.")
    @click.option("--authority", default=None, help="Owning local authority.")
    @click.option("--phone", default=None, help="Owning local authority contact number.")
    def command(**options: Any) -> None:
        from producers.decisions import publish_decision

        event_id = publish_decision(_settings(), kind, **options)
        click.echo(f"published {kind} {event_id}")

    return command


for _kind, _help in (
    ("case_opened", "Open a case on the CSE tracker."),
    ("case_closed", "Close a case (makes the health flag inactive with the reason)."),
    ("risk_level_set", "Set the child's CSE risk level."),
    ("strategy_meeting_held", "Record a multi-agency strategy meeting."),
):
    cases.add_command(_decision_command(_kind, _help))


# -- the web applications -------------------------------------------------------------------


@cli.group()
def serve() -> None:
    """Serve the hub's web applications."""


@serve.command("hub")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8400, show_default=True, envvar="HUBSTREAM_WEB_PORT",
              help="Port to listen on (HUBSTREAM_WEB_PORT).")
def serve_hub(host: str, port: int) -> None:
    """The hub's workplace: the queue of concerns, each concern's evidence, each child's chronology
    and the decisions taken there. Sign-in at the identity provider (HUBSTREAM_OIDC_ISSUER)."""
    import uvicorn

    from web.app import create_app

    _settings()  # the local stack's password file, for the hub_web role
    click.echo(f"hub web application on http://{host}:{port}/ (signing in at the identity provider)")
    uvicorn.run(create_app(), host=host, port=port, server_header=False, log_level="info")


# -- the demo -----------------------------------------------------------------------------


@cli.command()
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--days", type=int, default=180, show_default=True)
@click.option("--children", type=int, default=300, show_default=True)
def demo(seed: int, days: int, children: int) -> None:
    """Run the whole pipeline on a simulated county and print what came out."""
    from hubstream.demo import run_demo

    run_demo(_settings(), seed=seed, days=days, children=children)


def main() -> None:
    cli(prog_name="hubstream")


if __name__ == "__main__":
    main()
