"""Sampling a running worker with py-spy and summarising where its time goes, by file:line.

py-spy attaches to the live process (no restart, no code change) and samples its Python stacks;
``--nonblocking`` keeps it from pausing the worker while it reads them. The raw output is one
line per distinct stack (``frame;frame;... count``), each frame ``function (file:line)``.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import BENCH_VENV


def py_spy() -> Path | None:
    for candidate in (BENCH_VENV / "bin" / "py-spy", Path(sys.executable).parent / "py-spy"):
        if candidate.exists():
            return candidate
    return None


def start(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes] | None:
    tool = py_spy()
    if tool is None:
        print("  py-spy not found (see bench/README.md, Setting up): no profile", file=sys.stderr)
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            str(tool),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            "100",
            "--nonblocking",
            "--format",
            "raw",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _short(frame: str) -> str:
    # "fn (/abs/path/site-packages/faust/x.py:12)" -> "fn (faust/x.py:12)"
    name, _, where = frame.rpartition(" (")
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where}"


def summarise(raw: Path, top: int = 15) -> dict[str, Any]:
    """Top frames by own time (the leaf of each sample) and by inclusive time (anywhere on the stack)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if " (" in f]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count

    def table(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"frame": f, "percent": round(100 * c / total, 1)} for f, c in counter.most_common(top)]

    return {"samples": total, "own": table(own), "inclusive": table(inclusive)}
