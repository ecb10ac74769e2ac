"""``evolve``: a copy of a rule-state dataclass with some fields changed.

``dataclasses.replace`` walks every field and calls ``__init__`` on each change, which was a
tenth of handling a hotspot observation. State classes validate nothing when built (their
fields come from the rules themselves or from the checked JSON codec), so a copy of the
instance dictionary does the same job.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")

_NAMES: dict[type[Any], frozenset[str]] = {}


def evolve(state: T, **changes: Any) -> T:
    kind = type(state)
    names = _NAMES.get(kind)
    if names is None:
        if hasattr(kind, "__post_init__"):
            raise TypeError(f"{kind.__name__} validates itself; use dataclasses.replace")
        names = _NAMES[kind] = frozenset(f.name for f in fields(kind))  # type: ignore[arg-type]
    if not changes.keys() <= names:
        raise TypeError(f"{kind.__name__} has no field(s) {sorted(changes.keys() - names)}")
    copy: T = object.__new__(kind)
    copy.__dict__.update(state.__dict__)
    copy.__dict__.update(changes)
    return copy
