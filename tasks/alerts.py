"""send_alert: one Slack message through core.alerts (which never raises into trading)."""

from __future__ import annotations

from prefect import task

from core.alerts import AlertKind
from tasks.retries import ADAPTER_RETRIED
from tasks.runtime import Runtime


@task(name="send_alert", **ADAPTER_RETRIED)
def send_alert(rt: Runtime, kind: str, title: str, lines: list[str] | None = None) -> bool:
    """The alerter retries on its own (timeouts, 5xx, 429 Retry-After) and logs instead of raising."""
    return rt.alerter.send(AlertKind(kind), title, lines or [])


def flow_run_link(flow_run_id: str, fallback_port: int) -> str:
    """The run's page in the Prefect UI: PREFECT_UI_URL (derived by Prefect from PREFECT_API_URL), else
    the local server `mlcrypto up` starts on schedule.prefect_port."""
    from prefect.settings import PREFECT_UI_URL

    base = (PREFECT_UI_URL.value() or f"http://127.0.0.1:{fallback_port}").rstrip("/")
    return f"{base}/runs/flow-run/{flow_run_id}"


def alert_flow_state(flow_name: str, flow_run_id: str, flow_run_name: str, state_name: str, error: str | None) -> bool:
    """One FLOW_FAILURE alert (flow, run link, error) for a run that failed or crashed. Called from the
    flows' state hooks, outside any runtime: settings come from the environment. Never raises (a broken
    alert must not hide the run's own state); the webhook is a SecretStr that core.alerts never logs."""
    import logging

    from core.alerts import SlackAlerter
    from core.settings import load_settings

    try:
        settings = load_settings()
    except Exception as exc:  # noqa: BLE001 - a hook must not raise; say why nothing was sent
        logging.getLogger(__name__).error("flow %s %s: no alert sent, settings invalid: %s", flow_name, state_name, exc)
        return False
    link = flow_run_link(flow_run_id, settings.schedule.prefect_port)
    return SlackAlerter.from_settings(settings).send(
        AlertKind.FLOW_FAILURE, f"flow {flow_name} {state_name.lower()}: run {flow_run_name}",
        fields={"flow": flow_name, "state": state_name, "run": link, "error": (error or "no message")[:1500]},
    )
