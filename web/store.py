"""The hub store as the web application reads and changes it: always as the person signed in.

The application logs in as ``hub_web``, which holds no rights of its own (NOINHERIT); each
request runs in one transaction that first sets the role of the user (``SET LOCAL ROLE``), so
PostgreSQL's row-level security decides which authorities' rows exist for them. Every read of a
child, an identity or evidence writes its access-log row in that same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, NoReturn

import psycopg2.pool
from psycopg2 import sql

from consumers import concerns, db
from streams.config import RuleConfig, load_rule_config
from web.people import NotAllowed, User

PAGE_SIZE = 25
COUNT_UP_TO = 10_000  # the queue says "more than 10,000" rather than count a million rows
SORTS = {
    "changed": "c.last_change_at DESC, c.concern_id",
    "oldest": "c.opened_at ASC, c.concern_id",
    "severity": "c.severity_rank, c.last_change_at DESC, c.concern_id",
    "evidence": "c.evidence_count DESC, c.concern_id",
}
RULES = ("repeat_missing", "return_interview_overdue", "hotspot", "association")
STATUSES = concerns.STATUSES
SEVERITIES = concerns.SEVERITIES


@dataclass(frozen=True)
class QueueFilter:
    status: str = "open"  # open (not closed), or one status
    severity: str = ""
    rule: str = ""
    authority: str = ""
    sort: str = "changed"
    page: int = 1

    def where(self) -> tuple[sql.Composable, list[Any]]:
        clauses: list[sql.Composable] = []
        params: list[Any] = []
        if self.status == "open":
            clauses.append(sql.SQL("c.status <> 'closed'"))
        elif self.status:
            clauses.append(sql.SQL("c.status = %s"))
            params.append(self.status)
        for column, value in (
            ("severity", self.severity),
            ("rule", self.rule),
            ("authority", self.authority),
        ):
            if value:
                clauses.append(sql.SQL("c.{} = %s").format(sql.Identifier(column)))
                params.append(value)
        where = sql.SQL(" AND ").join(clauses) if clauses else sql.SQL("true")
        return where, params


class Store:
    def __init__(self, dsn: str, *, max_connections: int = 8) -> None:
        self.pool = psycopg2.pool.ThreadedConnectionPool(1, max_connections, dsn)

    def close(self) -> None:
        self.pool.closeall()

    @contextmanager
    def as_user(self, user: User) -> Iterator[db.Cursor]:
        """One transaction as ``user``'s role: committed if the block returns, else rolled back."""
        conn = self.pool.getconn()
        try:
            with conn, conn.cursor() as cur:
                cur.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(user.db_role)))
                yield cur
        finally:
            self.pool.putconn(conn)


def log_view(cur: db.Cursor, user: User, purpose: str, refs: Sequence[str]) -> None:
    db.log_access(cur, actor=user.username, action="read", purpose=purpose, store="hub", record_refs=refs)


def queue(cur: db.Cursor, f: QueueFilter) -> tuple[list[dict[str, Any]], int]:
    where, params = f.where()
    cur.execute(
        sql.SQL("SELECT count(*) FROM (SELECT 1 FROM hub.concerns c WHERE {} LIMIT %s) AS n").format(where),
        [*params, COUNT_UP_TO + 1],
    )
    [total] = cur.fetchone() or (0,)
    order = sql.SQL(SORTS.get(f.sort, SORTS["changed"]))
    rows = db.fetch_dicts(
        cur,
        sql.SQL(
            "SELECT c.concern_id, c.rule, c.subject_kind, c.subject, c.authority, a.name AS authority_name,"
            " c.severity, c.status, c.owner, c.opened_at, c.last_change_at, c.evidence_count, c.alert_count"
            " FROM hub.concerns c LEFT JOIN hub.authorities a ON a.code = c.authority"
            " WHERE {} ORDER BY {} LIMIT %s OFFSET %s"
        ).format(where, order),
        [*params, PAGE_SIZE, (max(f.page, 1) - 1) * PAGE_SIZE],
    )
    return rows, total


def concern(cur: db.Cursor, concern_id: str) -> dict[str, Any] | None:
    found = db.fetch_dicts(
        cur,
        "SELECT c.*, a.name AS authority_name FROM hub.concerns c"
        " LEFT JOIN hub.authorities a ON a.code = c.authority WHERE c.concern_id = %s",
        (concern_id,),
    )
    if not found:
        return None
    row = found[0]
    row["history"] = db.fetch_dicts(
        cur, "SELECT * FROM hub.concern_history WHERE concern_id = %s ORDER BY id DESC", (concern_id,)
    )
    row["alerts"] = db.fetch_dicts(
        cur,
        "SELECT alert_id, rule, severity, window_start, window_end, raised_at, settings, handling_conditions,"
        " resolves FROM hub.alert_flags WHERE concern_id = %s ORDER BY raised_at DESC",
        (concern_id,),
    )
    row["evidence_rows"] = db.fetch_dicts(
        cur,
        "SELECT * FROM hub.evidence WHERE event_id = ANY(%s) ORDER BY occurred_at DESC",
        (row["evidence"],),
    )
    return row


def triage(cur: db.Cursor, user: User, concern_id: str, action: str, **fields: str | None) -> concerns.Change:
    """Apply a person's triage action (row locked); raises TriageError, NotAllowed or LookupError."""
    found = db.fetch_dicts(
        cur,
        f"SELECT {', '.join(concerns.COLUMNS)} FROM hub.concerns WHERE concern_id = %s FOR UPDATE",
        (concern_id,),
    )
    if not found:
        refuse_or_not_found(cur, "concern", concern_id)
    before = concerns.Concern.from_row(found[0])
    after, change = concerns.triage(before, action, actor=user.username, now=datetime.now(UTC), **fields)
    cur.execute(
        "UPDATE hub.concerns SET status = %s, owner = %s, last_change_at = %s, closed_at = %s,"
        " close_reason = %s WHERE concern_id = %s",
        (after.status, after.owner, after.last_change_at, after.closed_at, after.close_reason, concern_id),
    )
    cur.execute(
        "INSERT INTO hub.concern_history"
        " (concern_id, authority, action, actor, at, from_status, to_status, note)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (
            concern_id,
            after.authority,
            change.action,
            change.actor,
            change.at,
            change.from_status,
            change.to_status,
            change.note,
        ),
    )
    db.log_access(
        cur,
        actor=user.username,
        action="write",
        purpose=f"triage: {action}",
        store="hub",
        record_refs=[concern_id],
    )
    return change


def child(cur: db.Cursor, child_key: str) -> dict[str, Any] | None:
    """A child's record on the tracker and chronology across agencies; None if none is visible."""
    tracker = db.fetch_dicts(cur, "SELECT * FROM hub.children WHERE child_key = %s", (child_key,))
    evidence = db.fetch_dicts(
        cur,
        "SELECT e.* FROM hub.evidence_children c JOIN hub.evidence e USING (event_id)"
        " WHERE c.child_key = %s ORDER BY e.occurred_at DESC",
        (child_key,),
    )
    concerns_ = db.fetch_dicts(
        cur,
        "SELECT concern_id, rule, severity, status, owner, opened_at, last_change_at, evidence_count,"
        " authority FROM hub.concerns WHERE subject_kind = 'child' AND subject = %s"
        " ORDER BY last_change_at DESC",
        (child_key,),
    )
    decisions = db.fetch_dicts(
        cur, "SELECT * FROM hub.decisions WHERE child_key = %s ORDER BY occurred_at DESC", (child_key,)
    )
    if not (tracker or evidence or concerns_ or decisions):
        return None
    nhs = next((t["nhs_number"] for t in tracker if t.get("nhs_number")), None) or next(
        (n for e in evidence if (n := _nhs_number_in(e["detail"], child_key))), None
    )
    authority = (
        (tracker[0]["authority"] if tracker and tracker[0].get("authority") else None)
        or next((c["authority"] for c in concerns_), None)
        or next((e["authority"] for e in evidence), None)
    )
    return {
        "child_key": child_key,
        "tracker": tracker[0] if tracker else None,
        "nhs_number": nhs,
        "authority": authority,
        "evidence": evidence,
        "concerns": concerns_,
        "decisions": decisions,
        "chronology": chronology(evidence, concerns_, decisions),
        "episodes": episodes(evidence, _interview_hours, datetime.now(UTC)),
        **health(cur, nhs),
    }


def _interview_hours(area: str) -> int:
    """The return-interview deadline of ``area``, as the worker applies it (HUBSTREAM_RULES_FILE)."""
    return _rule_config().return_interview.for_area(area).hours


@cache
def _rule_config() -> RuleConfig:
    """Read once per process, as the worker reads it: not a file read per episode of every page."""
    return load_rule_config()


def health(cur: db.Cursor, nhs_number: str | None) -> dict[str, Any]:
    """The child's health flags and the last 25 reads of them in health (none without an NHS
    number, or for a child the caller's role does not see on the tracker)."""
    if nhs_number is None:
        return {"health_flags": [], "health_reads": []}
    flags = db.fetch_dicts(
        cur,
        "SELECT flag_id, status, code, display, period_start, period_end, status_reason, updated_at"
        " FROM health.cse_flags WHERE nhs_number = %s ORDER BY code",
        (nhs_number,),
    )
    reads = db.fetch_dicts(cur, "SELECT at, actor, purpose FROM hub.health_reads(%s)", (nhs_number,))
    return {"health_flags": flags, "health_reads": reads}


def episodes(
    evidence: Sequence[dict[str, Any]], deadline_hours: Callable[[str], int], now: datetime
) -> list[dict[str, Any]]:
    """A child's missing episodes from the agencies' events, newest first: when missing and
    returned, the return interview's due time (the hours of the area the child went missing in)
    and where it stands: completed, declined, overdue, due, or the child still missing."""
    found: dict[str, dict[str, Any]] = {}
    for e in sorted(evidence, key=lambda e: e["occurred_at"]):
        if e["source"] != "missing_episode":
            continue
        episode = found.setdefault(
            e["episode_id"],
            {
                "episode_id": e["episode_id"],
                "area": e["authority"],
                "missing_at": None,
                "returned_at": None,
                "interview": None,
                "interview_at": None,
                "risk_level": None,
                "missing_from": None,
            },
        )
        if e["kind"] == "reported_missing":
            episode.update(
                missing_at=e["occurred_at"],
                area=e["authority"],
                risk_level=e["detail"].get("risk_level"),
                missing_from=e["detail"].get("missing_from"),
            )
        elif e["kind"] == "found_or_returned" and episode["returned_at"] is None:
            episode["returned_at"] = e["occurred_at"]
        elif e["kind"] == "return_interview" and episode["interview"] is None:
            episode.update(interview=e["detail"].get("interview_outcome"), interview_at=e["occurred_at"])
    for episode in found.values():
        returned = episode["returned_at"]
        episode["due_at"] = returned + timedelta(hours=deadline_hours(episode["area"])) if returned else None
        if episode["interview"]:
            episode["interview_status"] = episode["interview"]
        elif returned is None:
            episode["interview_status"] = "still missing"
        else:
            episode["interview_status"] = "overdue" if episode["due_at"] < now else "due"
    return sorted(found.values(), key=lambda ep: ep["missing_at"] or ep["returned_at"] or now, reverse=True)


def _nhs_number_in(detail: dict[str, Any], child_key: str) -> str | None:
    """The NHS number an agency gave for the child: a missing episode's own, or the child's in a report."""
    if detail.get("nhs_number"):
        return str(detail["nhs_number"])
    persons = detail.get("persons") or ()
    given = (p["nhs_number"] for p in persons if p["person_key"] == child_key and p.get("nhs_number"))
    return next((str(n) for n in given), None)


def chronology(
    evidence: Sequence[dict[str, Any]],
    concerns_: Sequence[dict[str, Any]],
    decisions: Sequence[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Everything known of a child, newest first, across agencies."""
    entries = (
        [{"at": e["occurred_at"], "what": "evidence", "row": e} for e in evidence]
        + [{"at": c["opened_at"], "what": "concern", "row": c} for c in concerns_]
        + [{"at": d["occurred_at"], "what": "decision", "row": d} for d in decisions]
    )
    return sorted(entries, key=lambda e: e["at"], reverse=True)


def access_log(cur: db.Cursor, page: int) -> list[dict[str, Any]]:
    return db.fetch_dicts(
        cur,
        "SELECT id, at, actor, action, purpose, store, record_ref, recipient FROM audit.access_log"
        " ORDER BY id DESC LIMIT %s OFFSET %s",
        (PAGE_SIZE * 4, (max(page, 1) - 1) * PAGE_SIZE * 4),
    )


def refuse_or_not_found(cur: db.Cursor, kind: str, key: str) -> NoReturn:
    """For a child or concern the user cannot see: 403 if another authority owns it, else 404."""
    cur.execute("SELECT hub.authority_of(%s, %s)", (kind, key))
    row = cur.fetchone()
    if row and row[0]:
        raise NotAllowed(f"{kind} {key} belongs to {row[0]}")
    raise LookupError(key)
