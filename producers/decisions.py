"""Hub decisions, made by people at the hub, published as HubDecision events."""

from __future__ import annotations

from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from hubstream.settings import Settings
from producers.publish import DeliveryError, Publisher


def publish_decision(
    settings: Settings,
    kind: str,
    *,
    child_key: str,
    decided_by: str,
    nhs_number: str | None = None,
    risk: str | None = None,
    reason: str | None = None,
    authority: str | None = None,
    phone: str | None = None,
    at: datetime | None = None,
    area: str | None = None,
    publisher: Publisher | None = None,
    principal: str = "hub",
) -> str:
    """Validate and publish one decision, as ``principal``; returns its event id once the broker
    has it (a decision that cannot be delivered raises DeliveryError: it must not look taken)."""
    if kind == "case_closed" and not reason:
        raise ValueError("reason is required to close a case (it becomes the health flag's status reason)")
    now = datetime.now(UTC)
    record: dict[str, Any] = {
        "event_id": str(uuid4()),
        "occurred_at": at or now,
        "reported_at": now,
        "kind": kind,
        "person_key": child_key,
        "nhs_number": nhs_number,
        "risk_level": risk,
        "reason": reason or kind.replace("_", " "),
        "decided_by": decided_by,
        "area": area or settings.area,
        "owning_authority": authority or settings.authority_name,
        "contact_phone": phone or settings.authority_phone,
    }
    with (
        nullcontext(publisher)
        if publisher is not None
        else Publisher(settings, principal=principal) as sender
    ):
        sender.publish("HubDecision", record)
        sender.flush()
        if sender.delivery_failures:
            raise DeliveryError(
                f"decision {record['event_id']} not delivered: {sender.delivery_failures[-1]}"
            )
    return str(record["event_id"])
