"""What a benchmark reports to `make bench` (bench/run_all.py): figures with their targets."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version

from pydantic import BaseModel


class Figure(BaseModel):
    """One measured number; ``target`` is ``">= 2000"``, ``"<= 1.0"`` or None (context)."""

    bench: str
    name: str
    measured: float
    unit: str
    target: str | None = None
    note: str = ""

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        op, bound = self.target.split()
        return self.measured >= float(bound) if op == ">=" else self.measured <= float(bound)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        return platform.processor() or "cpu"


def machine() -> dict[str, object]:
    versions = {}
    for package in ("teachloop", "langgraph", "duckdb", "pyarrow", "pydantic", "torch"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "versions": versions,
    }
