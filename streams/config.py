"""Rule settings for the worker: defaults, overridden per area from an optional JSON file.

HUBSTREAM_RULES_FILE names a JSON file such as::

    {"repeat_missing": {"E06000016": {"count": 3, "days": 30}},
     "return_interview": {"E06000016": {"out_of_order_hours": 12}},
     "hotspot": {"E10000018": {"min_reports": 4}}}

Keys are rule names, then area codes, then the fields to change from the defaults.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streams import rules


@dataclass(frozen=True)
class RuleConfig:
    repeat_missing: rules.AreaSettings[rules.RepeatMissingSettings]
    return_interview: rules.AreaSettings[rules.ReturnInterviewSettings]
    hotspot: rules.AreaSettings[rules.HotspotSettings]
    association: rules.AreaSettings[rules.AssociationSettings]


def load_rule_config(path: str | None = None) -> RuleConfig:
    path = path if path is not None else os.environ.get("HUBSTREAM_RULES_FILE")
    changes: dict[str, Any] = {}
    if path:
        try:
            changes = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"HUBSTREAM_RULES_FILE {path!r} could not be read as JSON: {exc}") from None
    unknown = sorted(set(changes) - {"repeat_missing", "return_interview", "hotspot", "association"})
    if unknown:
        raise ValueError(f"HUBSTREAM_RULES_FILE names unknown rules {unknown}")
    return RuleConfig(
        repeat_missing=rules.AreaSettings.from_changes(
            rules.RepeatMissingSettings(), changes.get("repeat_missing", {})
        ),
        return_interview=rules.AreaSettings.from_changes(
            rules.ReturnInterviewSettings(), changes.get("return_interview", {})
        ),
        hotspot=rules.AreaSettings.from_changes(rules.HotspotSettings(), changes.get("hotspot", {})),
        association=rules.AreaSettings.from_changes(
            rules.AssociationSettings(), changes.get("association", {})
        ),
    )
