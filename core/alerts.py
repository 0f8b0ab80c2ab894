"""Slack incoming-webhook alerts: data health, fills, exits, regime changes, flow failures.

POST {"text": ..., "blocks": [...]} as JSON to the webhook URL (https://api.slack.com/messaging/webhooks).
An alert must never break trading: a timeout, connection error, 5xx or 429 is retried a few times under
the project's one retry policy (`core.retry`, honouring Retry-After on 429, capped), any other 4xx (a bad
or revoked hook) is not retried, and then the alert is given up and logged; send() returns whether Slack
took it and never raises. Without a configured URL, alerts are only logged. The URL is a secret (whoever has it
can post to the channel): it is kept as SecretStr and never logged.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx
from pydantic import SecretStr

from core.errors import TemporaryError
from core.retry import retry_after_seconds, retry_policy
from core.settings import Settings

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 30.0  # never let Slack park a trading flow for longer than this
_WEBHOOK_PATH = re.compile(r"/services/[^\s\"']+")


class _RedactWebhookPaths(logging.Filter):
    """httpx logs every request URL at INFO; a webhook's path is its secret, so cut it out."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = _WEBHOOK_PATH.sub("/services/<redacted>", record.getMessage())
            record.args = None
        return True


_httpx_log = logging.getLogger("httpx")
if not any(isinstance(f, _RedactWebhookPaths) for f in _httpx_log.filters):
    _httpx_log.addFilter(_RedactWebhookPaths())


class _SlackUnavailable(TemporaryError):
    """Slack may take the alert later (timeout, connection error, 5xx, 429)."""


class _SlackRefused(Exception):
    """Slack refused the alert (a 4xx other than 429): retrying cannot help."""


class AlertKind(StrEnum):
    DATA_HEALTH = "data_health"
    FILL = "fill"
    EXIT = "exit"
    REGIME_CHANGE = "regime_change"
    FLOW_FAILURE = "flow_failure"
    VENUE = "venue"  # the live venue lost an answer, or an order is in doubt


_ICON = {
    AlertKind.DATA_HEALTH: ":warning:",
    AlertKind.FILL: ":white_check_mark:",
    AlertKind.EXIT: ":checkered_flag:",
    AlertKind.REGIME_CHANGE: ":rotating_light:",
    AlertKind.FLOW_FAILURE: ":x:",
    AlertKind.VENUE: ":bank:",
}


@dataclass
class AlertStats:
    sent: int = 0
    failed: int = 0
    retries: int = 0
    logged_only: int = 0


class SlackAlerter:
    def __init__(
        self,
        webhook_url: SecretStr | None,
        *,
        timeout: float = 5.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._url = webhook_url
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.stats = AlertStats()
        self._sleep = sleep

    @classmethod
    def from_settings(cls, settings: Settings) -> SlackAlerter:
        a = settings.alerts
        return cls(a.slack_webhook_url, timeout=a.timeout_seconds, max_retries=a.max_retries)

    def send(self, kind: AlertKind, title: str, lines: list[str] | None = None, *, fields: dict[str, Any] | None = None) -> bool:
        """Post one alert; True when Slack accepted it. Never raises."""
        try:
            payload = self._payload(kind, title, lines or [], fields or {})
        except Exception as exc:  # a bad field value must not break the caller either
            log.error("could not build %s alert %r: %s", kind, title, exc)
            return False
        log.info("alert [%s] %s", kind.value, payload["text"])
        if self._url is None:
            self.stats.logged_only += 1
            return False
        return self._post(kind, payload)

    @staticmethod
    def _payload(kind: AlertKind, title: str, lines: list[str], fields: dict[str, Any]) -> dict[str, Any]:
        text = f"{_ICON[kind]} [{kind.value}] {title}"
        body = "\n".join(lines + [f"*{k}*: {v}" for k, v in fields.items()])
        blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}}]
        if body:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": body[:2900]}})  # Slack: 3000 max
        return {"text": text + (f"\n{body}" if body else ""), "blocks": blocks}

    def _post(self, kind: AlertKind, payload: dict[str, Any]) -> bool:
        assert self._url is not None
        url = self._url.get_secret_value()
        tries = 0

        def once() -> None:
            nonlocal tries
            tries += 1
            if tries > 1:
                self.stats.retries += 1
            try:
                response = httpx.post(url, json=payload, timeout=self.timeout)
            except httpx.HTTPError as exc:
                raise _SlackUnavailable(type(exc).__name__) from None  # never str(exc): it may quote the URL
            status = response.status_code
            if status == 429:
                wait = retry_after_seconds(response.headers)
                raise _SlackUnavailable("HTTP 429", retry_after=None if wait is None else min(MAX_RETRY_AFTER, wait))
            if status >= 500:
                raise _SlackUnavailable(f"HTTP {status}")
            if status >= 300:
                raise _SlackRefused(f"HTTP {status}")

        policy = retry_policy(
            what=f"Slack {kind.value} alert", attempts=self.max_retries + 1, initial=self.backoff,
            cap=MAX_RETRY_AFTER, log=log, sleep=self._sleep,
        )
        try:
            policy(once)
        except Exception as exc:  # an alert must never raise into trading
            self.stats.failed += 1
            reason = str(exc) if isinstance(exc, (_SlackUnavailable, _SlackRefused)) else type(exc).__name__
            log.error("Slack %s alert not delivered after %d attempt(s) (%s); it is in the log above", kind.value, tries, reason)
            return False
        self.stats.sent += 1
        return True
