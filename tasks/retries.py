"""Prefect task retry options: Prefect retries only what no adapter has retried already and what may pass.

The network adapters (Polygon REST, Binance klines, Slack, the venue) retry temporary failures under
`core.retry` themselves; a `TemporaryFeedError` reaching a task has spent that budget, and a rejected key,
a bad setting, bad data or a refused order stays wrong however often it is retried. What is left for
Prefect is the store (a dropped connection, a locked file) and other I/O the adapters do not wrap.
"""

from __future__ import annotations

from typing import Any

from prefect.cache_policies import NO_CACHE

from core.errors import StoreError, TradingSystemError

# Errors of our own making (a bad setting, bad data, a feed or venue that refused or was already
# retried by its adapter) are never retried, except StoreError: the store may answer on the next try.
# Programming errors return the same answer every time.
_NEVER_RETRIED: tuple[type[BaseException], ...] = (TypeError, ValueError, LookupError, AttributeError, AssertionError)


def is_retryable(exc: BaseException) -> bool:
    """Whether a task that failed with `exc` may succeed when Prefect runs it again."""
    if isinstance(exc, StoreError):
        return True
    return not isinstance(exc, (TradingSystemError, *_NEVER_RETRIED))


def retry_unless_permanent(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry the failed run only when its error `is_retryable`."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - the state's own error, classified below
        return is_retryable(exc)
    return False


# Task options: store and file I/O (a few spaced retries), and in-memory compute (one retry, for an
# OSError while reading, never for a logic error).
IO_RETRIES: dict[str, Any] = dict(
    retries=3, retry_delay_seconds=[1, 5, 15], retry_condition_fn=retry_unless_permanent, cache_policy=NO_CACHE
)
COMPUTE_RETRIES: dict[str, Any] = dict(
    retries=1, retry_delay_seconds=5, retry_condition_fn=retry_unless_permanent, cache_policy=NO_CACHE
)
# Network calls whose adapter retries on its own: Prefect adds none on top.
ADAPTER_RETRIED: dict[str, Any] = dict(retries=0, cache_policy=NO_CACHE)

__all__ = ["ADAPTER_RETRIED", "COMPUTE_RETRIES", "IO_RETRIES", "is_retryable", "retry_unless_permanent"]
