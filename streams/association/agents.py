"""Associations: the same adult, vehicle, phone or handle with several children, per entity."""

from __future__ import annotations

from typing import Any

import faust

from streams import rules, translate
from streams.app import app, association_topic, dead_letter, observe, rule_config, send_alerts, state_table
from streams.rules import association

states = state_table("association", "association_state")


async def forward_to_associations(report: rules.IntelligenceReport) -> None:
    if not report.children:
        return
    keys = association.keys_for(report)
    if keys:
        data = translate.event_to_bytes(report)
        for key in keys:
            await association_topic.send(key=key.encode(), value=data)


@app.agent(association_topic)
async def associations(stream: faust.StreamT[Any]) -> None:
    async for event in stream.events():
        try:
            report = translate.event_from_bytes(event.value)
            entity = event.key.decode()
            settings = rule_config.association.for_area(report.area)  # type: ignore[union-attr]
            watermark = observe(event, report.occurred_at)
            state = states.get(entity) or association.initial(entity)
            state, alerts = association.apply(state, report, settings)
            state, _ = association.advance(state, watermark, settings)
            states[entity] = state
        except rules.RuleInputError as exc:
            dead_letter(event, str(exc), None, "process")
            continue
        await send_alerts(alerts)
