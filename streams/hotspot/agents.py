"""Hotspots: located observations re-keyed by coarse H3 cell, scored over a sliding window."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import faust

from hubstream import topics as catalogue
from streams import rules, translate
from streams.app import MergedWatermark, app, dead_letter, hotspot_topic, rule_config, send_alerts, state_table
from streams.rules import hotspot

states = state_table("hotspot", "hotspot_state")
# Fed by every partition of the missing-episode and both intelligence topics.
merged = MergedWatermark(
    sum(t.partitions for t in (catalogue.MISSING_EPISODES, catalogue.POLICE_INTELLIGENCE, catalogue.PARTNER_INTELLIGENCE))
)


async def forward_to_hotspots(event: rules.RuleEvent, source: str, watermark: datetime) -> None:
    area = getattr(event, "area", None)
    if area is None:
        return
    keys = hotspot.keys_for_event(event, rule_config.hotspot.for_area(area))
    if keys:
        data = translate.event_to_bytes(event, source, watermark)
        for key in keys:
            await hotspot_topic.send(key=key.encode(), value=data)


@app.agent(hotspot_topic)
async def hotspots(stream: faust.StreamT[Any]) -> None:
    async for event in stream.events():
        try:
            rule_event, source, source_mark = translate.event_from_bytes(event.value)
            cell = event.key.decode()
            settings = rule_config.hotspot.for_area(rule_event.area)  # type: ignore[union-attr]
            state = states.get(cell) or hotspot.initial(cell)
            state, alerts = hotspot.apply(state, rule_event, settings)
            watermark = merged.observe(event, source, source_mark)
            if watermark is not None:
                state, _ = hotspot.advance(state, watermark, settings)
            states[cell] = state
        except rules.RuleInputError as exc:
            dead_letter(event, str(exc), None, "process")
            continue
        await send_alerts(alerts, event)
