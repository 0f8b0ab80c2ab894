"""Serve every deployment of prefect.yaml from this process: `python -m deployments.serve` (what
`mlcrypto serve` and `mlcrypto up` run). prefect.yaml is the one list of deployments; the schedules
come from the settings (schedule.*), whose defaults equal the crons written in prefect.yaml.

Serving needs no work pool or worker: this process polls the API server and runs the flows itself.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.settings import PROJECT_ROOT, Settings, load_settings

PREFECT_YAML = PROJECT_ROOT / "prefect.yaml"
CRON_SETTING = {
    "scan-and-trade": "scan_cron",
    "manage-positions": "manage_cron",
    "data-health": "health_cron",
    "weekly-retrain": "retrain_cron",
}


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    entrypoint: str  # path/to/file.py:function
    parameters: dict[str, Any] = field(default_factory=dict)
    crons: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    description: str = ""
    concurrency_limit: int | None = None


def read_specs(path: Path = PREFECT_YAML) -> list[DeploymentSpec]:
    doc = yaml.safe_load(path.read_text())
    out = []
    for d in doc.get("deployments") or []:
        crons = tuple(s["cron"] for s in d.get("schedules") or [] if "cron" in s)
        out.append(DeploymentSpec(
            d["name"], d["entrypoint"], dict(d.get("parameters") or {}), crons, tuple(d.get("tags") or ()),
            d.get("description", ""), d.get("concurrency_limit"),
        ))
    return out


def load_flow(entrypoint: str, root: Path = PROJECT_ROOT) -> Any:
    """Import the flow object an entrypoint names, the way Prefect does (by file path)."""
    file, _, name = entrypoint.partition(":")
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module_name = file.removesuffix(".py").replace("/", ".")
    module = importlib.import_module(module_name) if importlib.util.find_spec(module_name) else None
    if module is None:
        raise ImportError(f"entrypoint {entrypoint}: cannot import {file}")
    return getattr(module, name)


def to_deployments(settings: Settings, specs: list[DeploymentSpec] | None = None) -> list[Any]:
    """RunnerDeployments for prefect.serve; scheduled ones take their cron from the settings."""
    deps = []
    for spec in specs or read_specs():
        crons = spec.crons
        if spec.name in CRON_SETTING:
            crons = (getattr(settings.schedule, CRON_SETTING[spec.name]),)
        deps.append(load_flow(spec.entrypoint).to_deployment(
            name=spec.name, cron=list(crons) or None, parameters=spec.parameters or None,
            tags=list(spec.tags), description=spec.description, concurrency_limit=spec.concurrency_limit,
        ))
    return deps


def main() -> None:
    from deployments.prefect_env import configure

    settings = load_settings()
    configure(settings)
    from prefect import serve

    serve(*to_deployments(settings), limit=4)


if __name__ == "__main__":
    main()
