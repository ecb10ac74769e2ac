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
