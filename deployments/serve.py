"""Serve every deployment of prefect.yaml from this process: `python -m deployments.serve` (what
`mlcrypto serve` and `mlcrypto up` run). prefect.yaml is the one list of deployments; the settings
(schedule.*) are the one source of the schedules: serve reads them, `render_prefect_yaml` writes them
into prefect.yaml (`mlcrypto deploy-check --write`), and `mlcrypto deploy-check` and the tests fail
when the file disagrees with them.

Serving needs no work pool or worker: this process polls the API server and runs the flows itself.
"""

from __future__ import annotations

import importlib.util
import re
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


_DEPLOYMENT = re.compile(r"^  - name: (?P<name>\S+)\s*$")
_CRON = re.compile(r'^(?P<lead>\s+- cron: )"[^"]*"(?P<rest>.*)$')


def render_prefect_yaml(settings: Settings, text: str) -> str:
    """prefect.yaml `text` with each scheduled deployment's cron replaced by its setting; everything
    else (comments and layout included) unchanged."""
    out, current = [], None
    for line in text.splitlines(keepends=True):
        if m := _DEPLOYMENT.match(line):
            current = m["name"]
        elif current in CRON_SETTING and (c := _CRON.match(line.rstrip("\n"))):
            cron = getattr(settings.schedule, CRON_SETTING[current])
            line = f'{c["lead"]}"{cron}"{c["rest"]}\n'
        out.append(line)
    return "".join(out)


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
