"""Where a stage's CPU went: core-seconds per part of the local stack, read from ``/proc``.

The end-to-end replay shares two cores between the publisher (this process), the broker, the
schema registry, PostgreSQL, the worker and both sinks; its rate is bounded by their CPU taken
together, not by any one of them. ``CpuAccount`` samples each part's processes every half
second (PostgreSQL's backends come and go with connections, so the postmaster's children are
listed at each sample) and, at the end, the whole machine's busy time from ``/proc/stat``: what
no part accounts for (short-lived processes, the kernel's own work, other tenants) is reported
as ``unaccounted``, so the parts always add up to the machine.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from bench.common import proc_cpu_seconds

TICK = os.sysconf("SC_CLK_TCK")

Pids = Callable[[], Iterable[int]]


def machine_busy_seconds() -> float:
    """Core-seconds the machine has spent on anything but idling and waiting for I/O."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / TICK


def pid_file(path: Path) -> Pids:
    """The process whose id is the first line of ``path`` (a stack service's pid file)."""

    def pids() -> list[int]:
        try:
            return [int(path.read_text().split()[0])]
        except (OSError, ValueError, IndexError):
            return []

    return pids


def with_children(parent: Pids) -> Pids:
    """A process and its direct children (PostgreSQL: the postmaster and every backend)."""

    def pids() -> list[int]:
        found: list[int] = []
        for pid in parent():
            found.append(pid)
            with contextlib.suppress(OSError):
                found += [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
        return found

    return pids


class CpuAccount:
    """Core-seconds each named part used between ``start()`` and ``stop()``.

    A process seen at the first sample counts from there; one that appears later counts from its
    own start (its whole CPU time so far), and one that ends between samples keeps the figure of
    its last sample.
    """

    def __init__(self, parts: dict[str, Pids], every_s: float = 0.5) -> None:
        self.parts = parts
        self.every_s = every_s
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._owner: dict[int, str] = {}
        self._machine0 = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-account", daemon=True)

    def start(self) -> None:
        self._machine0 = machine_busy_seconds()
        self._sample(first=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._done.wait(self.every_s):
            self._sample()

    def _sample(self, *, first: bool = False) -> None:
        for part, pids in self.parts.items():
            for pid in pids():
                used = proc_cpu_seconds(pid)
                if used is None:
                    continue
                if pid not in self._first:
                    self._first[pid] = used if first else 0.0
                    self._owner[pid] = part
                self._last[pid] = used

    def stop(self) -> dict[str, float]:
        """Core-seconds per part, ``unaccounted`` and ``machine`` (the machine's busy time)."""
        self._done.set()
        self._thread.join()
        self._sample()
        machine = machine_busy_seconds() - self._machine0
        used = dict.fromkeys(self.parts, 0.0)
        for pid, first in self._first.items():
            used[self._owner[pid]] += self._last[pid] - first
        used["unaccounted"] = max(0.0, machine - sum(used.values()))
        used["machine"] = machine
        return used
