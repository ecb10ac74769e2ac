"""PostgreSQL connections, migrations and the append-only access log."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from importlib import resources
from typing import Any, TypeAlias, TypeVar

import psycopg2
import psycopg2.extensions
import psycopg2.sql

log = logging.getLogger(__name__)
T = TypeVar("T")

# psycopg2 ships no type information, so to mypy these are Any; they still name what is passed.
Connection: TypeAlias = psycopg2.extensions.connection
Cursor: TypeAlias = psycopg2.extensions.cursor


def connect(
    dsn: str, *, attempts: int = 1, backoff_s: float = 0.5, max_backoff_s: float = 10.0
) -> Connection:
    """Connect, waiting out an unavailable database with exponential backoff."""
    delay = backoff_s
    for attempt in range(1, attempts + 1):
        try:
            return psycopg2.connect(dsn)
        except psycopg2.OperationalError as exc:
            if attempt == attempts:
                raise
            log.warning(
                "database unavailable (%s); retry %d/%d in %.1fs", str(exc).strip(), attempt, attempts, delay
            )
            time.sleep(delay)
            delay = min(delay * 2, max_backoff_s)
    raise AssertionError("unreachable")


def migrate(conn: Connection) -> list[str]:
    """Apply the versioned migrations not applied yet, each in its own transaction."""
    with conn, conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS public.schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur.execute("SELECT version FROM public.schema_migrations")
        done = {row[0] for row in cur.fetchall()}
    applied = []
    folder = resources.files("consumers") / "migrations"
    for item in sorted(folder.iterdir(), key=lambda p: p.name):
        version = item.name.removesuffix(".sql")
        if not item.name.endswith(".sql") or version in done:
            continue
        with conn, conn.cursor() as cur:
            # Serialise concurrent migrators (two test workers, two consumers starting together).
            cur.execute("SELECT pg_advisory_xact_lock(7202601)")
            cur.execute("SELECT 1 FROM public.schema_migrations WHERE version = %s", (version,))
            if cur.fetchone():
                continue
            cur.execute(item.read_text())
            cur.execute("INSERT INTO public.schema_migrations (version) VALUES (%s)", (version,))
        applied.append(version)
        log.info("applied migration %s", version)
    return applied


def log_access(
    cur: Cursor,
    *,
    actor: str,
    action: str,
    purpose: str,
    store: str,
    record_refs: Iterable[str],
    recipient: str | None = None,
) -> None:
    """Append one access-log row per record, inside the caller's transaction."""
    refs = list(record_refs)
    if refs:
        # One statement whatever the number of records: the references travel as one JSON array.
        cur.execute(
            "INSERT INTO audit.access_log (actor, action, purpose, store, record_ref, recipient)"
            " SELECT %s, %s, %s, %s, ref, %s FROM json_array_elements_text(%s) AS ref",
            (actor, action, purpose, store, recipient, json.dumps(refs)),
        )


def in_transaction(conn: Connection, work: Callable[[Cursor], T]) -> T:
    with conn, conn.cursor() as cur:
        return work(cur)


def fetch_dicts(cur: Cursor, sql: str | psycopg2.sql.Composable, params: Any = None) -> list[dict[str, Any]]:
    cur.execute(sql, params)
    names = [d[0] for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
