"""``evolve``: a copy of a rule-state dataclass with some fields changed.

``dataclasses.replace`` walks every field and calls ``__init__`` on each change, which was a
tenth of handling a hotspot observation. State classes validate nothing when built (their
fields come from the rules themselves or from the checked JSON codec), so setting the fields
directly does the same job in half the time. They are set one by one, in declaration order, as
``__init__`` would: a copied ``__dict__`` would cost every state object a full dictionary
(about 60 bytes more each, 60 MB over a million children).
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Any, TypeVar

T = TypeVar("T")

_NAMES: dict[type[Any], tuple[tuple[str, ...], frozenset[str]]] = {}
_set = object.__setattr__


def evolve(state: T, **changes: Any) -> T:
    kind = type(state)
    known = _NAMES.get(kind)
    if known is None:
        if hasattr(kind, "__post_init__"):
            raise TypeError(f"{kind.__name__} validates itself; use dataclasses.replace")
        ordered = tuple(f.name for f in fields(kind))  # type: ignore[arg-type]
        known = _NAMES[kind] = (ordered, frozenset(ordered))
    names, allowed = known
    if not changes.keys() <= allowed:
        raise TypeError(f"{kind.__name__} has no field(s) {sorted(changes.keys() - allowed)}")
    copy: T = object.__new__(kind)
    for name in names:
        _set(copy, name, changes[name] if name in changes else getattr(state, name))
    return copy


class IssueOfReport:
    """What a remembered issue of a report (a hotspot observation, an association link) says
    of the report it is an issue of; its class has ``event_id``, ``occurred_at``, ``report_id``
    and ``issued_at`` fields."""

    __slots__ = ()
    event_id: str
    occurred_at: datetime
    report_id: str
    issued_at: datetime | None

    @property
    def report(self) -> str:
        """The report this is an issue of: one however many times it was issued."""
        return self.report_id or self.event_id

    @property
    def issue(self) -> tuple[datetime, str]:
        """The order of the issues of one report: the first is its original, the last its grading."""
        return (self.issued_at or self.occurred_at, self.event_id)
