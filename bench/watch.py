"""Watching a consumer group catch up, in a background thread, with a progress bar."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from bench.common import KafkaProbe, bar
from hubstream.settings import Settings


class LagWatch(threading.Thread):
    """Samples (wall time, messages behind, messages committed) for a group until stopped.

    Its own Kafka clients: kafka-python clients are not to be shared between threads.
    """

    def __init__(
        self,
        settings: Settings,
        group: str,
        topics: Sequence[str],
        *,
        desc: str,
        total: int = 0,
        position: int = 1,
        interval_s: float = 1.0,
    ) -> None:
        super().__init__(daemon=True, name=f"lag-{group}")
        self.settings = settings
        self.group = group
        self.topics = list(topics)
        self.desc = desc
        self.total = total
        self.position = position
        self.interval_s = interval_s
        self.samples: list[tuple[float, int, int]] = []
        self._stopped = threading.Event()

    def run(self) -> None:
        probe = KafkaProbe(self.settings)
        progress = bar(desc=self.desc, total=self.total or None, position=self.position, unit=" msgs")
        try:
            while not self._stopped.is_set():
                got = probe.lag(self.group, self.topics)
                if got is not None:
                    behind, done = got
                    self.samples.append((time.time(), behind, done))
                    progress.total = max(self.total, done + behind)
                    progress.update(done - progress.n)  # redrawn at the bar's own pace
                self._stopped.wait(self.interval_s)
        finally:
            progress.close()
            probe.close()

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=10)

    def behind_at(self, when: float) -> int | None:
        """Messages behind at the last sample taken at or before ``when``."""
        before = [b for t, b, _ in self.samples if t <= when]
        return before[-1] if before else None

    def caught_up(self, *, after: float, timeout_s: float, confirm_s: float = 2.0) -> float:
        """Wall time of the first sample after ``after`` with nothing behind that stays so ``confirm_s``.

        Confirmed because a stage that feeds itself (the worker's re-keyed topics) can read as
        drained while it is still writing its last batch (as hubstream.progress.wait_for_group).
        """
        deadline = time.monotonic() + timeout_s
        while True:
            first_zero: float | None = None
            for t, behind, _ in list(self.samples):
                if t < after:
                    continue
                if behind == 0:
                    if first_zero is None:
                        first_zero = t
                    elif t - first_zero >= confirm_s:
                        return first_zero
                else:
                    first_zero = None
            if time.monotonic() > deadline:
                raise TimeoutError(f"group {self.group} did not catch up within {timeout_s:.0f}s")
            time.sleep(0.2)
