"""Flow state hooks: a failed and a crashed run each send one Slack FLOW_FAILURE alert (flow, run link,
error) to a local Slack receiver, through Prefect's test harness; the webhook never reaches the logs.
Every deployed flow carries both hooks."""

from __future__ import annotations

import logging

import pytest
from prefect import flow

from deployments.serve import load_flow, read_specs
from flows.hooks import ALERT_HOOKS
from tests.test_alerts import receiver  # noqa: F401 - the local Slack receiver fixture


@flow(name="alert-probe-fails", on_failure=ALERT_HOOKS, on_crashed=ALERT_HOOKS)
def _fails() -> None:
    raise ValueError("the store refused the write")


@flow(name="alert-probe-crashes", on_failure=ALERT_HOOKS, on_crashed=ALERT_HOOKS)
def _crashes() -> None:
    # What the engine sees when the process is told to stop under it: a BaseException, not an error.
    raise SystemExit(3)


@pytest.fixture
def slack_env(receiver, monkeypatch):  # noqa: F811
    monkeypatch.setenv("MLCRYPTO_ALERTS__SLACK_WEBHOOK_URL", receiver.url)
    monkeypatch.setenv("MLCRYPTO_ALERTS__MAX_RETRIES", "0")
    return receiver


def test_flow_hooks_when_run_fails_then_slack_alert_names_flow_link_and_error(
    prefect_harness: str, slack_env, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    state = _fails(return_state=True)

    assert state.is_failed()
    [post] = slack_env.posts
    text = post["body"]["text"]
    assert "[flow_failure]" in text and "alert-probe-fails" in text and "Failed" in text
    assert "ValueError: the store refused the write" in text
    run_id = str(state.state_details.flow_run_id)
    ui = prefect_harness.removesuffix("/api")
    assert f"{ui}/runs/flow-run/{run_id}" in text
    assert "secret-token" not in caplog.text and "/services/T000" not in caplog.text


def test_flow_hooks_when_run_crashes_then_slack_alert_sent(prefect_harness: str, slack_env, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SystemExit):
        _crashes()

    [post] = slack_env.posts
    text = post["body"]["text"]
    assert "alert-probe-crashes" in text and "Crashed" in text and "/runs/flow-run/" in text
    assert "secret-token" not in caplog.text


def test_deployed_flows_when_loaded_then_each_has_failure_and_crash_hooks() -> None:
    for spec in read_specs():
        fl = load_flow(spec.entrypoint)
        assert ALERT_HOOKS[0] in fl.on_failure_hooks, spec.name
        assert ALERT_HOOKS[0] in fl.on_crashed_hooks, spec.name
