"""send_alert: one Slack message through core.alerts (which never raises into trading)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from core.alerts import AlertKind
from tasks.runtime import Runtime


@task(name="send_alert", retries=0, cache_policy=NO_CACHE)
def send_alert(rt: Runtime, kind: str, title: str, lines: list[str] | None = None) -> bool:
    """The alerter retries on its own (timeouts, 5xx, 429 Retry-After) and logs instead of raising."""
    return rt.alerter.send(AlertKind(kind), title, lines or [])
