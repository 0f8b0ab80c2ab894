"""Shared benchmark record: every bench module returns a list of BenchResult."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field


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
