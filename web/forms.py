"""The forms of the hub's pages, checked before anything is written: each problem names its field,
as the GOV.UK error summary shows it (the message, linked to the field it is about)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from schemas.domain import nhs_number_problem

DECISION_KINDS = {
    "case_opened": "Open a case on the CSE tracker",
    "risk_level_set": "Set the risk level",
    "strategy_meeting_held": "Record a strategy meeting held",
    "case_closed": "Close the case",
}
RISK_LEVELS = ("low", "medium", "high")
REASON_MAX = 2000


@dataclass
class Problems:
    """Field -> message, in the order the form asks them."""

    by_field: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, message: str) -> None:
        self.by_field.setdefault(name, message)

    def __bool__(self) -> bool:
        return bool(self.by_field)

    def summary(self) -> list[dict[str, str]]:
        """The error summary's list: each message linked to its field."""
        return [{"text": message, "href": f"#{name}"} for name, message in self.by_field.items()]


@dataclass(frozen=True)
class Decision:
    kind: str
    risk: str | None
    reason: str | None
    nhs_number: str | None


def decision(form: Mapping[str, str]) -> tuple[Decision | None, Problems]:
    """A decision from the child page's form, or the problems that stop it being published."""
    problems = Problems()
    kind = (form.get("kind") or "").strip()
    if kind not in DECISION_KINDS:
        problems.add("kind", "Select what was decided")
    risk = (form.get("risk") or "").strip() or None
    if risk is not None and risk not in RISK_LEVELS:
        problems.add("risk", "Select the risk level: low, medium or high")
    elif kind == "risk_level_set" and risk is None:
        problems.add("risk", "Select the risk level")
    reason = (form.get("reason") or "").strip() or None
    if kind == "case_closed" and reason is None:
        problems.add("reason", "Enter why the case is closed (it becomes the health flag's reason)")
    if reason is not None and len(reason) > REASON_MAX:
        problems.add("reason", f"Reason must be {REASON_MAX} characters or fewer (it is {len(reason)})")
    nhs = "".join((form.get("nhs_number") or "").split()) or None
    if nhs is not None:
        problem = nhs_number_problem(nhs)
        if problem:
            problems.add("nhs_number", f"Enter a real NHS number, 10 digits like 943 476 5919 ({problem})")
    if problems:
        return None, problems
    return Decision(kind, risk, reason, nhs), problems


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site only, never another site."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/concerns"
