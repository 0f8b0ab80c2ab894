"""The one retry policy every network adapter uses (Hummingbot, Kraken/ccxt, Polygon REST, Slack).

Built on tenacity. Only errors that say "try again later" are retried: an adapter raises a
`TemporaryError` subclass (timeout, connection error, 5xx, 429) and anything else (a refusal, a bad
key, a bad request) passes straight through on the first attempt. A server's Retry-After is parsed
here and only here (`retry_after_seconds`), carried on the error, and honoured as the wait for that
retry (capped), instead of the exponential backoff with jitter used otherwise.

Prefect task retries sit above this only for what the adapter does not retry itself.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from core.errors import TemporaryError

T = TypeVar("T")

# Never sleep longer than this on a server's word: a Retry-After of an hour is a outage, not a pause.
MAX_RETRY_AFTER_S = 60.0


def retry_after_seconds(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds the server asked us to wait (Retry-After as delta-seconds or an HTTP date), >= 0;
    None when the header is absent or unreadable."""
    value = None
    for key, v in headers.items():
        if key.lower() == "retry-after":
            value = v.strip()
            break
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _wait(initial: float, cap: float) -> Callable[[RetryCallState], float]:
    backoff = wait_exponential_jitter(initial=initial, max=cap, jitter=initial)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        server = getattr(exc, "retry_after", None)
        if server is not None:
            return float(min(MAX_RETRY_AFTER_S, max(0.0, server)))
        return float(backoff(state))

    return wait


def _policy_kwargs(
    what: str, attempts: int, initial: float, cap: float, log: logging.Logger | None
) -> dict[str, object]:
    if attempts < 1:
        raise ValueError(f"{what}: attempts must be >= 1, got {attempts}")
    logger = log or logging.getLogger("mlcrypto.retry")

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        logger.warning("%s: %s; retry %d/%d in %.2fs", what, exc, state.attempt_number, attempts - 1, delay)

    return {
        "retry": retry_if_exception_type(TemporaryError),
        "stop": stop_after_attempt(attempts),
        "wait": _wait(initial, cap),
        "before_sleep": before_sleep,
        "reraise": True,
    }


def retry_policy(
    *,
    what: str,
    attempts: int,
    initial: float = 0.5,
    cap: float = 30.0,
    log: logging.Logger | None = None,
    sleep: Callable[[float], None] | None = None,
) -> Retrying:
    """A tenacity `Retrying` for `attempts` tries in all (>= 1), retrying only `TemporaryError`,
    waiting Retry-After when the error carries one, else exponential backoff with jitter from
    `initial` up to `cap` seconds. The last error is re-raised unchanged."""
    kwargs = _policy_kwargs(what, attempts, initial, cap, log)
    if sleep is not None:
        kwargs["sleep"] = sleep
    return Retrying(**kwargs)  # type: ignore[arg-type]


def async_retry_policy(
    *,
    what: str,
    attempts: int,
    initial: float = 0.5,
    cap: float = 30.0,
    log: logging.Logger | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> AsyncRetrying:
    """`retry_policy` for coroutines (same rule, same waits), sleeping with `asyncio.sleep` by default:
    `await async_retry_policy(...)(coro_fn)`."""
    kwargs = _policy_kwargs(what, attempts, initial, cap, log)
    if sleep is not None:
        kwargs["sleep"] = sleep
    return AsyncRetrying(**kwargs)  # type: ignore[arg-type]


def capped_backoff(attempt: int, initial: float, cap: float) -> float:
    """Delay before retry number `attempt` (0-based): initial x 2^attempt, never above cap. For loops
    that are not request retries (a WebSocket's reconnects, which add their own jitter)."""
    return min(cap, initial * 2**attempt)


def call_with_retry(fn: Callable[[], T], **policy: object) -> T:
    """Run `fn` under `retry_policy(**policy)`."""
    return retry_policy(**policy)(fn)  # type: ignore[arg-type]


__all__ = [
    "MAX_RETRY_AFTER_S",
    "async_retry_policy",
    "call_with_retry",
    "capped_backoff",
    "retry_after_seconds",
    "retry_policy",
]
