"""core.retry: only temporary errors are retried, Retry-After is honoured, refusals pass through."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.errors import FeedError, RateLimitedError, TemporaryFeedError, VenueError
from core.retry import MAX_RETRY_AFTER_S, async_retry_policy, call_with_retry, capped_backoff, retry_after_seconds


def test_retry_policy_when_temporary_then_retried_until_success() -> None:
    calls, slept = [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TemporaryFeedError("HTTP 503")
        return "ok"

    assert call_with_retry(flaky, what="t", attempts=5, initial=0.1, cap=1.0, sleep=slept.append) == "ok"
    assert len(calls) == 3 and len(slept) == 2
    assert all(0 < s <= 1.1 for s in slept)


def test_retry_policy_when_refusal_then_raised_on_first_attempt() -> None:
    calls = []

    def refused() -> None:
        calls.append(1)
        raise VenueError("HTTP 400 below minimum size")

    with pytest.raises(VenueError, match="minimum"):
        call_with_retry(refused, what="t", attempts=5, sleep=lambda s: None)
    assert len(calls) == 1


def test_retry_policy_when_retry_after_then_waits_server_time_capped() -> None:
    slept: list[float] = []
    errors = [RateLimitedError("429", retry_after=7.0), RateLimitedError("429", retry_after=10_000.0)]

    def limited() -> str:
        if errors:
            raise errors.pop(0)
        return "done"

    assert call_with_retry(limited, what="t", attempts=3, sleep=slept.append) == "done"
    assert slept == [7.0, MAX_RETRY_AFTER_S]


def test_retry_policy_when_budget_spent_then_last_error_reraised() -> None:
    def down() -> None:
        raise TemporaryFeedError("still down")

    with pytest.raises(TemporaryFeedError, match="still down"):
        call_with_retry(down, what="t", attempts=2, sleep=lambda s: None)
    assert isinstance(TemporaryFeedError("x"), FeedError)


def test_retry_after_seconds_when_delta_or_date_or_garbage() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds({"Retry-After": "12"}) == 12.0
    assert retry_after_seconds({"retry-after": "-3"}) == 0.0
    assert retry_after_seconds({"Retry-After": "Thu, 01 Jan 2026 00:00:30 GMT"}, now=now) == 30.0
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({}) is None


async def test_async_retry_policy_when_temporary_then_retried_and_refusal_not() -> None:
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RateLimitedError("429", retry_after=3.0)
        if len(calls) == 2:
            raise TemporaryFeedError("HTTP 502")
        return "ok"

    assert await async_retry_policy(what="t", attempts=3, initial=0.1, cap=1.0, sleep=sleep)(flaky) == "ok"
    assert waits[0] == 3.0 and 0.2 <= waits[1] <= 0.3 and len(calls) == 3

    async def refused() -> None:
        calls.append(1)
        raise FeedError("HTTP 401")

    with pytest.raises(FeedError, match="401"):
        await async_retry_policy(what="t", attempts=5, sleep=sleep)(refused)
    assert len(calls) == 4 and len(waits) == 2


def test_capped_backoff_when_attempts_grow_then_doubles_up_to_cap() -> None:
    assert [capped_backoff(a, 0.5, 3.0) for a in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
