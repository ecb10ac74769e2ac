"""The health flag store: one CSE flag per child per SNOMED code, keyed on NHS number."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg2.extras import execute_values

from consumers import db
from consumers.sink import Decoded

ACTOR = "health-consumer"
FLAG_COLUMNS = (
    "flag_id", "nhs_number", "status", "code", "display", "period_start", "period_end", "author",
    "owning_authority", "contact_phone", "status_reason",
)


class HealthHandler:
    store = "health"

    def write(self, cur: db.Cursor, batch: Sequence[Decoded]) -> None:
        # The topic is keyed by flag id, so the last event per flag in a batch is its state.
        latest: dict[str, dict[str, Any]] = {}
        for d in batch:
            latest[d.record["flag_id"]] = d.record
        execute_values(
            cur,
            f"INSERT INTO health.cse_flags ({', '.join(FLAG_COLUMNS)}) VALUES %s"
            " ON CONFLICT (flag_id) DO UPDATE SET "
            + ", ".join(f"{c} = EXCLUDED.{c}" for c in FLAG_COLUMNS[1:])
            + ", updated_at = now()",
            [tuple(_column(r, c) for c in FLAG_COLUMNS) for r in latest.values()],
        )
        db.log_access(
            cur, actor=ACTOR, action="write", purpose="maintain CSE flag for unscheduled care",
            store="health", record_refs=list(latest),
        )


def _column(record: dict[str, Any], column: str) -> Any:
    value = record[column]
    # Avro enum symbols cannot hold a hyphen; the store keeps FHIR's code.
    return FHIR_STATUS.get(value, value) if column == "status" else value


FHIR_STATUS = {"entered_in_error": "entered-in-error"}


def read_flags(cur: db.Cursor, nhs_number: str, *, reader: str, purpose: str) -> list[dict[str, Any]]:
    """Read a child's flags; the read itself is logged in the same transaction."""
    rows = db.fetch_dicts(
        cur,
        f"SELECT {', '.join(FLAG_COLUMNS)}, updated_at FROM health.cse_flags"
        " WHERE nhs_number = %s ORDER BY code",
        (nhs_number,),
    )
    db.log_access(
        cur, actor=reader, action="read", purpose=purpose, store="health",
        record_refs=[r["flag_id"] for r in rows] or [f"nhs_number:{nhs_number}:none"], recipient=reader,
    )
    return rows
