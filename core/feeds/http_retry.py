"""The retry rule the REST feed clients share (Binance klines, Polygon aggregates): wait what the server
asked for in Retry-After, else back off exponentially up to a cap; give up with FeedError once the retry
budget is spent. Each client still decides which answers are worth a retry. The WebSocket feed's
reconnect delay is the same capped exponential, with jitter on top."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from core.errors import FeedError


def capped_backoff(attempt: int, initial: float, cap: float) -> float:
    """Delay before retry number `attempt` (0-based): initial x 2^attempt, never above cap."""
    return min(cap, initial * 2**attempt)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """The server's Retry-After in seconds (>= 0), or None when it is absent or not a number."""
    try:
        return max(0.0, float(headers["Retry-After"]))
    except (KeyError, ValueError):
        return None


def retry_delay(
    attempt: int,
    reason: str,
    *,
    what: str,
    max_retries: int,
    backoff: float,
    max_backoff: float,
    server_delay: float | None,
    log: logging.Logger,
) -> float:
    """Seconds to wait after failed attempt number `attempt` (0-based), logged as a warning; raises
    FeedError naming `what` and the last `reason` once max_retries retries have been made."""
    if attempt >= max_retries:
        raise FeedError(f"{what} still failing after {attempt + 1} attempts ({reason})")
    delay = server_delay if server_delay is not None else capped_backoff(attempt, backoff, max_backoff)
    log.warning("%s: %s; retry %d/%d in %.2fs", what, reason, attempt + 1, max_retries, delay)
    return delay
