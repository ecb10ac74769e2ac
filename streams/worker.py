"""The stream worker: the faust app with every feature's agents, explicitly listed.

Run with ``hubstream worker`` (or ``faust -A streams.worker worker``).
"""

from __future__ import annotations

import sys

from streams.app import app, prepare
from streams.association import agents as association_agents
from streams.health_flags import agents as health_flag_agents
from streams.hotspot import agents as hotspot_agents
from streams.intelligence import agents as intelligence_agents
from streams.missing import agents as missing_agents

FEATURES = (missing_agents, intelligence_agents, hotspot_agents, association_agents, health_flag_agents)

__all__ = ["FEATURES", "app", "run_worker"]


def run_worker(argv: list[str]) -> None:
    prepare()
    sys.argv = ["hubstream-worker", "worker", "--loglevel", "info", *argv]
    app.main()
