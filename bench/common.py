"""Shared benchmark record: every bench module returns a list of BenchResult."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


@dataclass
class BenchResult:
    name: str
    value: float
    unit: str
    target: str  # e.g. "<= 50" or ">= 50000"
    ok: bool | None = None
    machine: str = field(default_factory=machine)

    def __post_init__(self) -> None:
        if self.ok is None and self.target:
            op, num = self.target.split()
            bound = float(num)
            self.ok = self.value <= bound if op == "<=" else self.value >= bound

    def as_dict(self) -> dict:
        return asdict(self)


def walk_forward_by_strategy(settings: Any) -> tuple[Any, list[tuple[str, Any]]]:
    """The shipped history of the monitored coins, and, per strategy whose walk-forward predicted
    anything, (strategy, its walk-forward result): the common start of the ML evidence
    benchmarks."""
    from models.dataset import STRATEGIES, build_events, load_history
    from models.evaluate import walk_forward

    bars = load_history(settings)
    events = build_events(bars, settings)
    runs = []
    for s in STRATEGIES:
        ev = events[s]
        wf = walk_forward(ev.trainable, s, ev.feature_names, settings)
        if not wf.predictions.is_empty():
            runs.append((s, wf))
    return bars, runs
