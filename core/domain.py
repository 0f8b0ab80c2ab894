"""Domain types at the boundaries: signals, scores, decisions (with reason codes), orders, fills, closed trades.

Columnar work uses polars frames with the CANDLE_SCHEMA columns; these typed records are what crosses
component boundaries one at a time (a signal to the manager, an order to a venue, a fill back).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.errors import DataQualityError

# Columns and dtypes of every candle frame in the project.
CANDLE_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.Utf8(),
    "timeframe": pl.Utf8(),
    "ts": pl.Datetime("us", "UTC"),
    "open": pl.Float64(),
    "high": pl.Float64(),
    "low": pl.Float64(),
    "close": pl.Float64(),
    "volume": pl.Float64(),
}

TIMEFRAME_DURATION: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "4h": timedelta(hours=4),
    "1d": timedelta(days=1),
}


def timeframe_duration(timeframe: str) -> timedelta:
    try:
        return TIMEFRAME_DURATION[timeframe]
    except KeyError:
        raise ValueError(f"unknown timeframe {timeframe!r}; use one of {sorted(TIMEFRAME_DURATION)}") from None


def bars_in(window: timedelta, timeframe: str) -> int:
    """How many bars of `timeframe` a time window spans (at least 1)."""
    return max(1, int(window / timeframe_duration(timeframe)))


def ts_bounds(ts: pl.Series) -> tuple[datetime, datetime]:
    """First and last value of a Datetime column (polars types min/max as any scalar, so check it)."""
    first, last = ts.min(), ts.max()
    if not isinstance(first, datetime) or not isinstance(last, datetime):
        raise DataQualityError(f"column {ts.name!r} ({ts.dtype}) has no timestamps: min {first!r}, max {last!r}")
    return first, last


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _require_utc(ts: datetime) -> datetime:
    if ts.tzinfo is None or ts.utcoffset() != timedelta(0):
        raise ValueError(f"timestamp {ts!r} must be timezone-aware UTC")
    return ts


class StrategyName(StrEnum):
    DCA = "dca"
    SWING = "swing"
    CHANNEL = "channel"


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"


class OrderStatus(StrEnum):
    PENDING = "pending"  # intent stored, not yet acknowledged by the venue
    OPEN = "open"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    REJECTED = "rejected"


class Regime(StrEnum):
    NORMAL = "NORMAL"
    CAUTION = "CAUTION"
    PANIC = "PANIC"
    EUPHORIA = "EUPHORIA"


class OrderPurpose(StrEnum):
    ENTRY = "entry"
    EXIT = "exit"


class Liquidity(StrEnum):
    MAKER = "maker"  # a resting limit order filled
    TAKER = "taker"  # a market order (or a triggered stop)


class ReasonCode(StrEnum):
    """Why a signal was taken or skipped: reports count these; Decision.detail says the numbers."""

    TAKEN = "taken"
    LOST_CONFLICT = "lost_conflict"  # another strategy's signal on the same symbol won
    REGIME_NO_ENTRIES = "regime_no_entries"
    REGIME_NO_SWING = "regime_no_swing"
    LOW_CONFIDENCE = "low_confidence"  # ml.decision_rule=threshold: p below the strategy's threshold
    LOW_EXPECTED_VALUE = "low_expected_value"  # ml.decision_rule=ev: net EV at or below ml.min_ev
    SYMBOL_HELD = "symbol_held"
    SYMBOL_PENDING = "symbol_pending"  # resting entry orders for the symbol
    MAX_POSITIONS = "max_positions"
    NOTIONAL_CAP = "notional_cap"
    ALLOCATION_EXHAUSTED = "allocation_exhausted"
    BELOW_MIN_NOTIONAL = "below_min_notional"  # the sizing, or the venue's minimum order value
    BELOW_MIN_AMOUNT = "below_min_amount"  # the venue's minimum order amount (after lot rounding)


# How ledgers written before reason codes phrased each reason (their free text becomes the detail).
_LEGACY_REASONS: tuple[tuple[str, ReasonCode], ...] = (
    ("taken", ReasonCode.TAKEN),
    ("lost conflict", ReasonCode.LOST_CONFLICT),
    ("confidence", ReasonCode.LOW_CONFIDENCE),
    ("max positions", ReasonCode.MAX_POSITIONS),
    ("open notional cap", ReasonCode.NOTIONAL_CAP),
    ("strategy allocation", ReasonCode.ALLOCATION_EXHAUSTED),
    ("order notional", ReasonCode.BELOW_MIN_NOTIONAL),
)


def legacy_reason_code(text: str) -> ReasonCode:
    """The code of an English reason stored by an earlier version (ValueError when none fits)."""
    if text.startswith("regime "):
        return ReasonCode.REGIME_NO_SWING if "swing" in text else ReasonCode.REGIME_NO_ENTRIES
    if text.startswith("symbol "):
        return ReasonCode.SYMBOL_PENDING if " pending " in text else ReasonCode.SYMBOL_HELD
    for prefix, code in _LEGACY_REASONS:
        if text.startswith(prefix):
            return code
    raise ValueError(f"unknown decision reason {text!r}")


class ExitReason(StrEnum):
    TAKE_PROFIT = "take_profit"
    STOP_LOSS = "stop_loss"
    TRAILING_STOP = "trailing_stop"
    MAX_HOLD = "max_hold"
    RANGE_BREAK = "range_break"
    END_OF_DATA = "end_of_data"
    DATA_HOLE = "data_hole"  # the symbol's bars stop for longer than strategy.max_bridged_gap: out at the last close
    MANUAL = "manual"



class TradePlan(_Frozen):
    """What a strategy proposes; percentages are fractions relative to the (average) entry price."""

    entry_type: OrderType
    entry_prices: tuple[float, ...] = Field(min_length=1)  # grid levels (DCA) or the reference price
    take_profit_pct: float = Field(gt=0)
    stop_loss_pct: float = Field(gt=0, lt=1)
    trailing_stop_pct: float | None = None
    max_hold: timedelta
    entry_expiry: timedelta | None = None  # unfilled limit levels expire after this
    range_support: float | None = None  # channel: exit early on a break
    range_resistance: float | None = None


class Signal(_Frozen):
    symbol: str
    strategy: StrategyName
    timeframe: str
    ts: datetime  # open time of the (closed) signal bar
    price: float  # close of the signal bar
    plan: TradePlan
    features: dict[str, float] = Field(default_factory=dict)

    @field_validator("ts")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return _require_utc(v)

    @property
    def signal_id(self) -> str:
        return f"{self.strategy.value}:{self.symbol}:{self.timeframe}:{self.ts.isoformat()}"


class Scores(_Frozen):
    """What the ML (or the rule-only default) says about a signal."""

    confidence: float = Field(ge=0, le=1)
    take_profit_pct: float = Field(gt=0)
    stop_loss_pct: float = Field(gt=0, lt=1)
    size_multiplier: float = Field(default=1.0, gt=0)
    hold: timedelta | None = None
    model_version: str | None = None  # None means rule-only defaults
    rule_only: bool = True

    @property
    def source(self) -> str:
        return "rule-only defaults (no champion model)" if self.rule_only else f"model {self.model_version}"


class Decision(_Frozen):
    signal_id: str
    symbol: str
    strategy: StrategyName
    ts: datetime
    taken: bool
    reason: ReasonCode
    detail: str = ""  # the numbers behind the code, e.g. "confidence 0.55 < threshold 0.65"
    regime: Regime = Regime.NORMAL
    confidence: float | None = None
    expected_value: float | None = None
    notional: float = 0.0
    scores: Scores | None = None
    features: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        """A decision stored as English text (before reason codes) keeps its text as the detail."""
        if isinstance(data, dict) and isinstance(data.get("reason"), str) and "detail" not in data:
            reason = data["reason"]
            if reason not in {c.value for c in ReasonCode}:
                data = {**data, "reason": legacy_reason_code(reason), "detail": reason}
        return data


class Order(_Frozen):
    client_order_id: str
    symbol: str
    side: Side
    order_type: OrderType
    quantity: float = Field(gt=0)
    price: float | None = None  # limit price; None for market
    strategy: StrategyName
    position_id: str
    created_ts: datetime
    expires_ts: datetime | None = None
    status: OrderStatus = OrderStatus.PENDING
    filled_quantity: float = 0.0
    venue_order_id: str | None = None
    purpose: OrderPurpose = OrderPurpose.ENTRY


class Fill(_Frozen):
    fill_id: str
    client_order_id: str
    symbol: str
    side: Side
    ts: datetime
    price: float = Field(gt=0)
    quantity: float = Field(gt=0)
    fee: float = Field(ge=0)
    liquidity: Liquidity = Liquidity.TAKER



class ClosedTrade(_Frozen):
    position_id: str
    symbol: str
    strategy: StrategyName
    entry_ts: datetime
    exit_ts: datetime
    entry_price: float
    exit_price: float
    quantity: float
    gross_pnl: float
    fees: float
    net_pnl: float
    exit_reason: ExitReason
    signal_id: str = ""

    @property
    def return_pct(self) -> float:
        cost = self.entry_price * self.quantity
        return self.net_pnl / cost if cost else 0.0
