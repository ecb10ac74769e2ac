"""Health CSE flags, raised and made inactive by hub decisions (never by algorithmic alerts)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import faust

import schemas
from hubstream import topics as catalogue
from hubstream.metrics import EVENTS_OUT
from hubstream.protect import pseudonym
from streams.app import app, dead_letter, decisions_topic, decode, health_flags_topic, serde, state_table
from streams.rules import health_flag

states = state_table("health-flag", "health_flag_state")


@app.agent(decisions_topic)
async def hub_decisions(stream: faust.StreamT[Any]) -> None:
    async for event in stream.events():
        record = decode(event, "HubDecision")
        if record is None:
            continue
        child = record["person_key"]
        state = states.get(pseudonym(child)) or health_flag.FlagState()
        state, flags = health_flag.apply(state, record)
        states[pseudonym(child)] = state
        for flag in flags:
            flag["reported_at"] = datetime.now(UTC)
            try:
                # Health must never receive a flag its own schema would refuse (say, a case
                # closed with an event time before the flag's start): the decision is
                # dead-lettered for the hub to correct instead.
                flag = schemas.validate("HealthCseFlag", flag)
            except schemas.SchemaViolation as exc:
                dead_letter(event, f"health flag from this decision is invalid: {exc}", exc.field, "process")
                continue
            data = serde.encode(catalogue.HEALTH_FLAGS.name, "HealthCseFlag", flag)
            await health_flags_topic.send(key=flag["flag_id"].encode(), value=data)
            EVENTS_OUT.labels(topic=catalogue.HEALTH_FLAGS.name).inc()
