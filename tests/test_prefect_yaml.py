"""prefect.yaml: every deployment parses, its entrypoint imports, schedules equal the settings; and
`prefect deploy --all` registers them all against a real local Prefect server, each then triggerable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from core.settings import PROJECT_ROOT, load_settings
from deployments.commands.ops import check_deployments, deploy_all, ensure_zombie_automation, write_schedules
from deployments.serve import CRON_SETTING, PREFECT_YAML, load_flow, read_specs, render_prefect_yaml

EXPECTED = {"streaming-ingest", "scan-and-trade", "manage-positions", "data-health", "weekly-retrain", "backfill",
            "backtest", "offline-session"}


def test_prefect_yaml_when_parsed_then_every_deployment_is_valid_and_importable() -> None:
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(yaml.safe_load(PREFECT_YAML.read_text()))
    names = [d.name for d in model.deployments]
    assert sorted(names) == sorted(EXPECTED) and len(names) == len(set(names))
    for d in model.deployments:
        flow = load_flow(d.entrypoint)
        assert hasattr(flow, "to_deployment"), d.entrypoint
        assert d.work_pool is not None and d.work_pool.name == "mlcrypto-process"
        assert set(d.parameters) <= set(flow.parameters.properties), f"{d.name}: unknown parameters"


def test_prefect_yaml_when_compared_with_settings_then_schedules_match_and_on_demand_ones_have_none() -> None:
    settings = load_settings()
    specs = {s.name: s for s in read_specs()}
    for name, attr in CRON_SETTING.items():
        assert specs[name].crons == (getattr(settings.schedule, attr),)
    assert specs["scan-and-trade"].crons == ("*/5 * * * *",) and specs["manage-positions"].crons == ("* * * * *",)
    for name in ("backfill", "backtest", "offline-session", "streaming-ingest"):
        assert specs[name].crons == ()
    assert specs["streaming-ingest"].concurrency_limit == 1
    assert check_deployments(settings) == []


def test_check_deployments_when_entrypoint_broken_then_problem_named(tmp_path: Path) -> None:
    doc = yaml.safe_load(PREFECT_YAML.read_text())
    doc["deployments"][0]["entrypoint"] = "flows/nope.py:missing"
    broken = tmp_path / "prefect.yaml"
    broken.write_text(yaml.safe_dump(doc))
    problems = check_deployments(load_settings(), broken)
    assert len(problems) == 1 and "flows/nope.py:missing" in problems[0]


@pytest.mark.slow
def test_prefect_deploy_all_when_local_server_then_every_deployment_registered_and_triggerable(
    prefect_harness: str, tmp_path: Path
) -> None:
    from prefect import get_client
    from prefect.deployments import run_deployment

    # Act: the real CLI, as a user runs it, against the harness's API server.
    out = deploy_all(prefect_harness, cwd=PROJECT_ROOT, env={"PREFECT_HOME": str(tmp_path)})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    with get_client(sync_client=True) as client:
        deps = {d.name: d for d in client.read_deployments()}
    # Assert: all registered, schedules as declared; each can be triggered (a run is created for the pool).
    assert EXPECTED <= set(deps)
    assert [s.schedule.cron for s in deps["scan-and-trade"].schedules] == ["*/5 * * * *"]
    assert deps["offline-session"].schedules == []
    for name in sorted(EXPECTED):
        run = run_deployment(f"{_flow_name(name)}/{name}", timeout=0)
        assert run.deployment_id == deps[name].id and run.state.is_scheduled()
    # The zombie-run automation came with it, once: a run whose heartbeats stop for 90 s is marked Crashed.
    assert not ensure_zombie_automation({**os.environ, "PREFECT_API_URL": prefect_harness, "PREFECT_HOME": str(tmp_path)})
    with get_client(sync_client=True) as client:
        [auto] = client.read_automations_by_name("mlcrypto-crash-zombie-runs")
    assert auto.enabled and auto.trigger.after == {"prefect.flow-run.heartbeat"} and auto.trigger.within.total_seconds() == 90
    assert [(a.type, a.state.value) for a in auto.actions] == [("change-flow-run-state", "CRASHED")]


def _flow_name(deployment: str) -> str:
    return load_flow(next(s.entrypoint for s in read_specs() if s.name == deployment)).name


def test_write_schedules_when_settings_change_a_cron_then_prefect_yaml_follows_and_checks_clean(tmp_path: Path) -> None:
    # Arrange: a copy of prefect.yaml, and settings whose scan cron differs from it
    copy = tmp_path / "prefect.yaml"
    copy.write_text(PREFECT_YAML.read_text())
    settings = load_settings(schedule={"scan_cron": "*/10 * * * *", "retrain_cron": "0 4 * * 2"})
    assert any("scan-and-trade" in p for p in check_deployments(settings, copy))  # disagreement is caught
    # Act
    changed = write_schedules(settings, copy)
    # Assert: only the two cron lines changed; the file now agrees with the settings
    specs = {s.name: s for s in read_specs(copy)}
    assert changed and check_deployments(settings, copy) == []
    assert specs["scan-and-trade"].crons == ("*/10 * * * *",) and specs["weekly-retrain"].crons == ("0 4 * * 2",)
    before, after = PREFECT_YAML.read_text().splitlines(), copy.read_text().splitlines()
    assert len(before) == len(after) and sum(a != b for a, b in zip(before, after, strict=True)) == 2
    assert render_prefect_yaml(load_settings(), PREFECT_YAML.read_text()) == PREFECT_YAML.read_text()  # shipped = defaults
