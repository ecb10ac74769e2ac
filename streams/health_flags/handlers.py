"""Health CSE flags, raised and made inactive by hub decisions (never by algorithmic alerts)."""

from __future__ import annotations

from datetime import UTC, datetime

import schemas
from hubstream.protect import pseudonym
from streams.app import DECISIONS, HEALTH_FLAGS, dead_letter, decode, serde, state_table
from streams.engine import Batch, Record
from streams.rules import health_flag

states = state_table("health-flag", DECISIONS, health_flag.FlagState, "health_flags")


def hub_decisions(record: Record, batch: Batch) -> None:
    value = decode(record, batch, "HubDecision")
    if value is None:
        return
    key = pseudonym(value["person_key"])
    state = states.get(record.partition, key) or health_flag.FlagState()
    state, flags = health_flag.apply(state, value)
    states.set(record.partition, key, state)
    for flag in flags:
        flag["reported_at"] = datetime.now(UTC)
        try:
            # Health must never receive a flag its own schema would refuse (say, a case closed
            # with an event time before the flag's start): the decision is dead-lettered for
            # the hub to correct instead.
            flag = schemas.validate("HealthCseFlag", flag)
        except schemas.SchemaViolation as exc:
            dead_letter(
                record, batch, f"health flag from this decision is invalid: {exc}", exc.field, "process"
            )
            continue
        data = serde.encode(HEALTH_FLAGS, "HealthCseFlag", flag)
        batch.send(HEALTH_FLAGS, flag["flag_id"].encode(), data)
