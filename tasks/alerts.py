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
