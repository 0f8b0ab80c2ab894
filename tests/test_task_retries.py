"""Prefect task retries (tasks/retries.py) on the real Prefect harness: only what may pass and what no
adapter has already retried is run again."""

from __future__ import annotations

import pytest

from core.errors import ConfigError, DataQualityError, FeedError, StoreError, TemporaryFeedError, TemporaryVenueError
from tasks.retries import IO_RETRIES, is_retryable


def _attempts_until_done(prefect_harness: str, error: Exception, fail_times: int) -> tuple[int, bool]:
    """Run a task with the IO options (no delays) that raises `error` `fail_times` times, then succeeds;
    returns how often Prefect ran it and whether the flow succeeded."""
    from prefect import flow, task

    calls: list[int] = []

    @task(**(IO_RETRIES | dict(retry_delay_seconds=0)))
    def flaky() -> str:
        calls.append(1)
        if len(calls) <= fail_times:
            raise error
        return "ok"

    @flow
    def run() -> str:
        return flaky()

    state = run(return_state=True)
    return len(calls), state.is_completed()


@pytest.mark.parametrize(
    "error",
    [
        DataQualityError("ETH: 3 missing bars"),
        ConfigError("store.postgres_dsn is missing"),
        FeedError("Polygon refused the API key (HTTP 401)"),
        TemporaryFeedError("Polygon REST still failing after 6 attempts (HTTP 503)"),  # the adapter retried already
    ],
    ids=["data-quality", "config", "rejected-key", "adapter-exhausted"],
)
def test_io_task_when_permanent_or_adapter_retried_error_then_run_once(prefect_harness: str, error: Exception) -> None:
    attempts, completed = _attempts_until_done(prefect_harness, error, fail_times=1)
    assert (attempts, completed) == (1, False)


def test_io_task_when_store_unreachable_then_retried_until_it_answers(prefect_harness: str) -> None:
    attempts, completed = _attempts_until_done(prefect_harness, StoreError("connection refused"), fail_times=2)
    assert (attempts, completed) == (3, True)


def test_io_task_when_store_keeps_failing_then_gives_up_after_the_retries(prefect_harness: str) -> None:
    attempts, completed = _attempts_until_done(prefect_harness, OSError("disk I/O error"), fail_times=10)
    assert (attempts, completed) == (4, False)  # the first run and 3 retries


def test_is_retryable_when_classified_then_only_store_and_foreign_io_errors() -> None:
    assert is_retryable(StoreError("x")) and is_retryable(OSError("x")) and is_retryable(RuntimeError("x"))
    for exc in (TemporaryVenueError("x"), ValueError("x"), KeyError("x"), DataQualityError("x")):
        assert not is_retryable(exc), exc
