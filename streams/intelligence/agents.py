"""Soft intelligence from police and partners: re-keyed to hotspot cells and to entities."""

from __future__ import annotations

from typing import Any

import faust

from streams import rules, translate
from streams.app import app, dead_letter, decode, intelligence_topic, observe, source_of
from streams.association.agents import forward_to_associations
from streams.hotspot.agents import forward_to_hotspots


@app.agent(intelligence_topic)
async def intelligence(stream: faust.StreamT[Any]) -> None:
    async for event in stream.events():
        record = decode(event, "IntelligenceReport")
        if record is None:
            continue
        try:
            report = translate.intelligence_event(record)
        except rules.RuleInputError as exc:
            dead_letter(event, str(exc), None, "process")
            continue
        watermark = observe(event, report.occurred_at)
        await forward_to_hotspots(report, source_of(event), watermark, event.message.timestamp)
        await forward_to_associations(report, source_of(event), watermark, event.message.timestamp)
