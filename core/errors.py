"""Errors named by what the operator must do."""

from __future__ import annotations


class TradingSystemError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(TradingSystemError):
    """A setting is wrong: fix it and restart."""


class DataQualityError(TradingSystemError):
    """Input data failed a check (bad candle, gap, duplicate): the data must be repaired."""


class StoreError(TradingSystemError):
    """The store cannot be reached or refused a write; nothing was half-written."""


class StrategyError(TradingSystemError):
    """Strategy code failed; re-raised from the cause."""


class TemporaryError(TradingSystemError):
    """A remote side failed in a way that may pass (timeout, connection error, 5xx, 429): the only
    kind of error `core.retry` retries. `retry_after` is the server's requested wait, if it gave one."""

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class VenueError(TradingSystemError):
    """The venue refused or failed in a way that needs a person (bad credentials, rejected order)."""


class TemporaryVenueError(VenueError, TemporaryError):
    """Timeout, connection error or 5xx: safe to retry after checking the order was not placed."""


class RateLimitedError(TemporaryVenueError):
    """The remote side asked us to slow down (HTTP 429)."""


class FeedError(TradingSystemError):
    """The market-data feed failed in a way that needs a person (for example a rejected API key)."""


class TemporaryFeedError(FeedError, TemporaryError):
    """The feed's server timed out, dropped the connection, answered 5xx or rate-limited us: retry."""
