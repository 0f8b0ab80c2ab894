"""State hooks of every deployed flow: a failed or crashed run sends a Slack FLOW_FAILURE alert with the
flow, the run's link in the Prefect UI and the error (tasks.alerts.alert_flow_state).

Use: @flow(..., on_failure=ALERT_HOOKS, on_crashed=ALERT_HOOKS).
"""

from __future__ import annotations

from typing import Any

from tasks.alerts import alert_flow_state


def alert_on_bad_state(flow: Any, flow_run: Any, state: Any) -> None:
    alert_flow_state(flow.name, str(flow_run.id), flow_run.name, state.name, state.message)


ALERT_HOOKS = [alert_on_bad_state]
