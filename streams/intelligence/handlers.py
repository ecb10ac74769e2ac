"""Soft intelligence from police and partners: re-keyed to hotspot cells and to entities."""

from __future__ import annotations

from streams import rules, translate
from streams.app import dead_letter, decode, observe
from streams.association.handlers import forward_to_associations
from streams.engine import Batch, Record
from streams.hotspot.handlers import forward_to_hotspots


def intelligence(record: Record, batch: Batch) -> None:
    value = decode(record, batch, "IntelligenceReport")
    if value is None:
        return
    try:
        report = translate.intelligence_event(value)
    except rules.RuleInputError as exc:
        dead_letter(record, batch, str(exc), None, "process")
        return
    watermark = observe(record, report.occurred_at)
    forward_to_hotspots(report, record, watermark, batch)
    forward_to_associations(report, record, watermark, batch)
