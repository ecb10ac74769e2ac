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
        latest: dict[str, Decoded] = {}
        for d in batch:
            latest[d.record["flag_id"]] = d
        # A row only moves forward in its source offset. One flag's states all come from one
        # partition (the flag id is the message key), so their offsets order them; a state from
        # another partition means the topic was repartitioned, and offsets no longer compare.
        written = execute_values(
            cur,
            f"INSERT INTO health.cse_flags AS f ({', '.join(FLAG_COLUMNS)}, source_partition, source_offset)"
            " VALUES %s ON CONFLICT (flag_id) DO UPDATE SET "
            + ", ".join(f"{c} = EXCLUDED.{c}" for c in FLAG_COLUMNS[1:])
            + ", source_partition = EXCLUDED.source_partition, source_offset = EXCLUDED.source_offset,"
            " updated_at = now()"
            " WHERE f.source_offset IS NULL OR f.source_partition IS DISTINCT FROM EXCLUDED.source_partition"
            " OR f.source_offset < EXCLUDED.source_offset"
            " RETURNING flag_id",
            [(*(_column(d.record, c) for c in FLAG_COLUMNS), d.partition, d.offset) for d in latest.values()],
            fetch=True,
        )
        # Only the rows actually written are logged as written; an older state refused is not.
        db.log_access(
            cur, actor=ACTOR, action="write", purpose="maintain CSE flag for unscheduled care",
            store="health", record_refs=[flag_id for (flag_id,) in written],
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
