"""The regime the last scan saw, kept in the record store between scans (so a change is noticed and
alerted once), and the regime reading as of a scan's time (core.regime)."""

from __future__ import annotations

from datetime import datetime

import polars as pl

from core.domain import Regime
from core.regime import regime_at, regime_frame
from core.settings import Settings
from core.storage.base import RecordStore
from core.trading.scan import RegimeState

REGIME_KIND = "regime_state"
_KEY = "current"


def regime_reading(market_bars: pl.DataFrame, settings: Settings, now: datetime) -> tuple[Regime, str]:
    """The circuit breaker as of `now` from BTC and the monitored coins' closed bars."""
    if market_bars.is_empty():
        return Regime.NORMAL, "no market bars"
    return regime_at(regime_frame(market_bars, settings), now)


def load_regime_state(records: RecordStore) -> RegimeState | None:
    stored = dict(records.get_records(REGIME_KIND)).get(_KEY)
    return RegimeState.from_record(stored) if stored else None


def save_regime_state(records: RecordStore, state: RegimeState) -> None:
    records.put_records(REGIME_KIND, [(_KEY, state.to_record())])


def reset_regime_state(records: RecordStore) -> int:
    keys = [k for k, _ in records.get_records(REGIME_KIND)]
    return records.delete_records(REGIME_KIND, keys) if keys else 0
