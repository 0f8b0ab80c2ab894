"""THE position-management rules: one copy, used by paper/live trading, the backtester and label generation.

Pure functions over a mutable ManagedPosition. `step(pos, bar, settings)` advances the position by one
bar that starts at or after the signal bar's close, in this fixed order (see docs/execution.md):

1. expiry   - unfilled entry levels expire when a bar starts at/after ``expiry_ts``;
2. entries  - a resting limit buy fills when the bar's low reaches it, at ``min(limit, open)`` (a bar that
              opens below the limit fills at the open), maker fee; a market entry fills at this bar's
              ``open * (1 + slippage)``, taker fee. TP/SL prices follow the average fill price;
3. exits    - conservative intra-bar order: the stop first (max of the stop-loss and the trailing stop,
              filled at ``min(stop, open)`` if gapped through), then take-profit (a resting limit sell,
              filled at ``max(tp, open)``, maker fee), then close-based exits: range break (close below
              the channel stop or above resistance) and max hold (close of the bar reaching it).
              Taker exits pay slippage; the TP pays none (it rests on the book);
4. trailing - the highest price is updated with this bar's high only AFTER the stop check.

On a bar where a *limit* entry level fills (the first one, or a later DCA level that re-averages the
position) we do not know whether the high came before the fill, so the TP (of the re-averaged position)
there is only taken if the close is at/above it - the close is the last trade, after the fill - and the
trailing high uses the close.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple

from core.domain import (
    ExitReason,
    Liquidity,
    OrderType,
    Scores,
    Side,
    Signal,
    StrategyName,
    timeframe_duration,
)
from core.errors import DataQualityError
from core.settings import Settings

PositionStatus = Literal["pending", "open", "closed"]


class Bar(NamedTuple):
    """One OHLC bar; immutable. A NamedTuple, not a frozen dataclass: label generation builds millions."""

    ts: datetime  # open time (UTC)
    open: float
    high: float
    low: float
    close: float
    duration: timedelta | None = None  # None: the position's signal timeframe

    def check(self) -> None:
        prices = (self.open, self.high, self.low, self.close)
        if any(not math.isfinite(p) or p <= 0 for p in prices) or self.low > min(self.open, self.close) or self.high < max(
            self.open, self.close
        ):
            raise DataQualityError(f"bar {self.ts}: inconsistent or non-positive OHLC {prices}; repair the candles first")


# --- the shared fill rules (paper venue and step both call these; never re-implement them) ---------------


def fill_price(side: Side, order_type: OrderType, limit_price: float | None, bar: Bar, slippage: float) -> float | None:
    """Whether an order resting before `bar` fills during it, and at what price (None: no fill)."""
    if order_type is OrderType.MARKET:
        return bar.open * (1 + slippage) if side is Side.BUY else bar.open * (1 - slippage)
    if limit_price is None:
        raise ValueError("a limit order needs a price")
    if side is Side.BUY:
        return min(limit_price, bar.open) if bar.low <= limit_price else None
    return max(limit_price, bar.open) if bar.high >= limit_price else None


def stop_fill_price(stop: float, bar: Bar, slippage: float) -> float | None:
    """A sell stop triggers when the low reaches it; it becomes a market order (gap-through: the open)."""
    return min(stop, bar.open) * (1 - slippage) if bar.low <= stop else None


def fee_rate(liquidity: Liquidity, settings: Settings) -> float:
    return settings.execution.maker_fee if liquidity == Liquidity.MAKER else settings.execution.taker_fee


def fill_fee(price: float, quantity: float, liquidity: Liquidity, settings: Settings) -> float:
    """The fee of one fill, charged on its notional."""
    return price * quantity * fee_rate(liquidity, settings)


def entry_liquidity(order_type: OrderType) -> Liquidity:
    """A resting limit order fills as maker, a market order as taker."""
    return Liquidity.MAKER if order_type is OrderType.LIMIT else Liquidity.TAKER


# --- state ------------------------------------------------------------------------------------------------


@dataclass
class EntryLevel:
    price: float  # limit price; for a market entry, the reference price used for sizing
    quantity: float
    client_order_id: str
    filled: bool = False
    fill_price: float | None = None
    fill_ts: datetime | None = None
    fee: float = 0.0
    expired: bool = False  # expired (entry_expiry) or cancelled because the position exited
    # Live only: the quantity already booked from this level's partial venue fills (0 in backtests and
    # paper, where a level fills whole). `fill_price`/`fee` then hold the booked part's VWAP and fees.
    booked_quantity: float = 0.0

    @property
    def resting(self) -> bool:
        return not self.filled and not self.expired

    @property
    def remaining(self) -> float:
        """The quantity still resting at the venue (the whole level unless partly booked)."""
        return self.quantity - self.booked_quantity


@dataclass
class ManagedPosition:
    position_id: str
    symbol: str
    strategy: StrategyName
    signal_id: str
    timeframe: str
    created_ts: datetime  # close of the signal bar: the first moment an order can rest
    entry_levels: list[EntryLevel]
    entry_type: OrderType
    expiry_ts: datetime | None
    take_profit_pct: float
    stop_loss_pct: float
    trailing_stop_pct: float | None
    hold: timedelta
    range_support: float | None = None
    range_resistance: float | None = None
    range_stop_pct: float = 0.01  # channel: the range is broken below support * (1 - this)
    resting_levels: int = 0  # entry levels neither filled nor expired (kept in step with entry_levels)
    quantity: float = 0.0  # filled
    avg_price: float = 0.0
    fees: float = 0.0  # entry fees plus the exit fee
    highest_price: float = 0.0
    entry_ts: datetime | None = None  # first fill (bar open time)
    max_hold_until: datetime | None = None
    status: PositionStatus = "pending"
    exit_reason: ExitReason | None = None
    exit_price: float | None = None
    exit_ts: datetime | None = None
    exit_fee: float = 0.0
    last_bar_ts: datetime | None = None

    # Levels derived from the average fill price; meaningful once quantity > 0.
    @property
    def take_profit_price(self) -> float:
        return self.avg_price * (1 + self.take_profit_pct)

    @property
    def stop_loss_price(self) -> float:
        return self.avg_price * (1 - self.stop_loss_pct)

    @property
    def trailing_price(self) -> float | None:
        return None if self.trailing_stop_pct is None else self.highest_price * (1 - self.trailing_stop_pct)

    @property
    def stop_price(self) -> float:
        trail = self.trailing_price
        return self.stop_loss_price if trail is None else max(self.stop_loss_price, trail)

    @property
    def range_stop_price(self) -> float | None:
        return None if self.range_support is None else self.range_support * (1 - self.range_stop_pct)

    @property
    def cost(self) -> float:
        return self.avg_price * self.quantity

    @property
    def entry_fees(self) -> float:
        return sum(lv.fee for lv in self.entry_levels)

    @property
    def resting_notional(self) -> float:
        return sum(lv.price * lv.remaining for lv in self.entry_levels if lv.resting)

    @property
    def gross_pnl(self) -> float:
        return 0.0 if self.exit_price is None else (self.exit_price - self.avg_price) * self.quantity

    @property
    def net_pnl(self) -> float:
        return self.gross_pnl - self.fees

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record for the store (timestamps as ISO strings)."""
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ManagedPosition:
        d = dict(d)
        d["entry_levels"] = [EntryLevel(**_parse_times(lv, ("fill_ts",))) for lv in d["entry_levels"]]
        d = _parse_times(d, ("created_ts", "expiry_ts", "entry_ts", "max_hold_until", "exit_ts", "last_bar_ts"))
        d["strategy"] = StrategyName(d["strategy"])
        d["entry_type"] = OrderType(d["entry_type"])
        d["exit_reason"] = None if d["exit_reason"] is None else ExitReason(d["exit_reason"])
        d["hold"] = timedelta(seconds=float(d["hold"]))
        return cls(**d)



def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, timedelta):
        return v.total_seconds()
    if isinstance(v, (StrategyName, OrderType, ExitReason)):
        return v.value
    return v


def _parse_times(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    d = dict(d)
    for k in keys:
        if d.get(k) is not None and isinstance(d[k], str):
            d[k] = datetime.fromisoformat(d[k])
    return d


# --- events -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filled:
    level: int
    client_order_id: str
    ts: datetime
    price: float
    quantity: float
    fee: float
    liquidity: Liquidity


@dataclass(frozen=True)
class Expired:
    level: int
    client_order_id: str
    ts: datetime
    why: Literal["expiry", "exit"] = "expiry"


@dataclass(frozen=True)
class Exited:
    reason: ExitReason
    ts: datetime  # close time of the exit bar: when the outcome is known
    price: float
    quantity: float
    fee: float
    liquidity: Liquidity


PositionEvent = Filled | Expired | Exited


# --- rules ------------------------------------------------------------------------------------------------


def open_position(
    signal: Signal, scores: Scores, notional: float, settings: Settings, position_id: str | None = None
) -> ManagedPosition:
    """Build the entry levels from the plan: a grid of equal-notional limit buys, or one market level."""
    if not math.isfinite(notional) or notional <= 0:
        raise ValueError(f"{signal.signal_id}: notional must be finite and > 0, got {notional}")
    plan = signal.plan
    pid = position_id or f"pos:{signal.signal_id}"
    created = signal.ts + timeframe_duration(signal.timeframe)
    if plan.entry_type is OrderType.MARKET:
        prices: tuple[float, ...] = (signal.price,)
    else:
        prices = plan.entry_prices
    if any(not math.isfinite(p) or p <= 0 for p in prices):
        raise ValueError(f"{signal.signal_id}: entry prices must be finite and > 0, got {prices}")
    per_level = notional / len(prices)
    levels = [EntryLevel(price=p, quantity=per_level / p, client_order_id=f"{pid}:e{i}") for i, p in enumerate(prices)]
    expiry = created + plan.entry_expiry if plan.entry_type is OrderType.LIMIT and plan.entry_expiry else None
    return ManagedPosition(
        position_id=pid,
        symbol=signal.symbol,
        strategy=signal.strategy,
        signal_id=signal.signal_id,
        timeframe=signal.timeframe,
        created_ts=created,
        entry_levels=levels,
        entry_type=plan.entry_type,
        expiry_ts=expiry,
        take_profit_pct=scores.take_profit_pct,
        stop_loss_pct=scores.stop_loss_pct,
        trailing_stop_pct=plan.trailing_stop_pct,
        hold=scores.hold or plan.max_hold,
        range_support=plan.range_support,
        range_resistance=plan.range_resistance,
        range_stop_pct=settings.strategy.channel.stop_below_support,
        resting_levels=len(levels),
    )


def apply_entry_fill(pos: ManagedPosition, level: int, ts: datetime, price: float, fee: float) -> Filled:
    """Record one level's fill (used by `step` and by the ledger for venue fills) and re-average."""
    lv = pos.entry_levels[level]
    if lv.filled:
        raise ValueError(f"{lv.client_order_id} is already filled; a fill is applied once")
    lv.filled, lv.fill_price, lv.fill_ts, lv.fee = True, price, ts, fee
    pos.resting_levels -= 0 if lv.expired else 1
    _add_to_position(pos, ts, price, lv.quantity, fee)
    return Filled(level, lv.client_order_id, ts, price, lv.quantity, fee, entry_liquidity(pos.entry_type))


def _add_to_position(pos: ManagedPosition, ts: datetime, price: float, quantity: float, fee: float) -> None:
    """Bought `quantity` at `price`: re-average, add the fee; the stop and max hold start at the first fill."""
    new_qty = pos.quantity + quantity
    pos.avg_price = (pos.avg_price * pos.quantity + price * quantity) / new_qty
    pos.quantity = new_qty
    pos.fees += fee
    if pos.entry_ts is None:  # the stop exists from this first fill on
        pos.entry_ts = ts
        pos.max_hold_until = ts + pos.hold
        pos.highest_price = price
        pos.status = "open"


def apply_partial_entry_fill(
    pos: ManagedPosition, level: int, ts: datetime, price: float, quantity: float, fee: float
) -> Filled:
    """Book part of a level as the venue fills it (live): the position holds it at once, re-averaged,
    and the stop exists from the first part on. The level keeps resting for the rest; `complete_entry_level`
    closes it when its order is done at the venue. A whole-level fill (backtest, paper) is
    `apply_entry_fill`; this one never marks the level filled."""
    lv = pos.entry_levels[level]
    if lv.filled:
        raise ValueError(f"{lv.client_order_id} is already filled; a fill is applied once")
    if not math.isfinite(quantity) or quantity <= 0 or not math.isfinite(price) or price <= 0:
        raise ValueError(f"{lv.client_order_id}: a fill needs a finite quantity and price > 0, got {quantity} @ {price}")
    booked = lv.booked_quantity + quantity
    lv.fill_price = ((lv.fill_price or 0.0) * lv.booked_quantity + price * quantity) / booked
    lv.fill_ts = lv.fill_ts or ts  # the first part's time
    lv.booked_quantity = booked
    lv.fee += fee
    _add_to_position(pos, ts, price, quantity, fee)
    return Filled(level, lv.client_order_id, ts, price, quantity, fee, entry_liquidity(pos.entry_type))


def complete_entry_level(pos: ManagedPosition, level: int) -> None:
    """A partly booked level's order is done at the venue (filled, or final with a part filled): the
    level is filled with what was booked and rests no more."""
    lv = pos.entry_levels[level]
    if lv.filled:
        return
    if lv.booked_quantity <= 0:
        raise ValueError(f"{lv.client_order_id}: nothing booked; a level with no fill expires instead")
    lv.filled, lv.quantity = True, lv.booked_quantity
    pos.resting_levels -= 0 if lv.expired else 1


def close_position(
    pos: ManagedPosition, reason: ExitReason, ts: datetime, price: float, liquidity: Liquidity, settings: Settings
) -> list[PositionEvent]:
    """Exit the whole filled quantity and cancel the resting levels."""
    events: list[PositionEvent] = []
    for i, lv in enumerate(pos.entry_levels):
        if lv.resting:
            lv.expired = True
            events.append(Expired(i, lv.client_order_id, ts, "exit"))
    pos.resting_levels = 0
    fee = fill_fee(price, pos.quantity, liquidity, settings)
    pos.exit_reason, pos.exit_price, pos.exit_ts, pos.exit_fee = reason, price, ts, fee
    pos.fees += fee
    pos.status = "closed"
    events.append(Exited(reason, ts, price, pos.quantity, fee, liquidity))
    return events


def begin_bar(pos: ManagedPosition, bar: Bar) -> bool:
    """Check the bar may be applied (after the signal bar, moving forward) and mark it seen.

    Returns False for a bar already applied (a replay after a restart), which callers skip."""
    if bar.ts < pos.created_ts:
        raise ValueError(f"{pos.position_id}: bar {bar.ts} starts before the signal bar closed ({pos.created_ts})")
    if pos.last_bar_ts is not None and bar.ts <= pos.last_bar_ts:
        return False
    pos.last_bar_ts = bar.ts
    return True


def enter(pos: ManagedPosition, bar: Bar, settings: Settings) -> list[PositionEvent]:
    """Steps 1-2: expire the levels past their expiry, then fill the resting levels this bar reaches."""
    events: list[PositionEvent] = []
    # 1. expiry before fills: a level cannot fill in a bar that starts after it expired.
    if pos.expiry_ts is not None and bar.ts >= pos.expiry_ts:
        for i, lv in enumerate(pos.entry_levels):
            if lv.resting:
                lv.expired = True
                pos.resting_levels -= 1
                events.append(Expired(i, lv.client_order_id, bar.ts, "expiry"))
    # 2. entries.
    liq = entry_liquidity(pos.entry_type)
    for i, lv in enumerate(pos.entry_levels):
        if lv.filled or lv.expired:
            continue
        price = fill_price(Side.BUY, pos.entry_type, lv.price, bar, settings.execution.slippage)
        if price is not None:
            events.append(apply_entry_fill(pos, i, bar.ts, price, fill_fee(price, lv.quantity, liq, settings)))
    return events


def manage_exits(pos: ManagedPosition, bar: Bar, settings: Settings, entry_bar: bool) -> list[PositionEvent]:
    """Steps 3-4 for a position holding quantity. `entry_bar`: its first fill happened on this bar (a
    later level filled during the bar is seen from the level's fill time)."""
    slippage = settings.execution.slippage
    bar_end = bar.ts + (bar.duration or timeframe_duration(pos.timeframe))
    limit_entry_bar = pos.entry_type is OrderType.LIMIT and (entry_bar or _filled_during(pos, bar.ts, bar_end))

    # 3. exits, conservative order: stop, then TP, then close-based exits.
    sl, trail = pos.stop_loss_price, pos.trailing_price
    stop_px = stop_fill_price(sl if trail is None or trail <= sl else trail, bar, slippage)
    if stop_px is not None:
        reason = ExitReason.TRAILING_STOP if trail is not None and trail > sl else ExitReason.STOP_LOSS
        return close_position(pos, reason, bar_end, stop_px, Liquidity.TAKER, settings)
    tp = pos.take_profit_price
    if limit_entry_bar:
        tp_px = tp if bar.close >= tp else None
    else:
        tp_px = fill_price(Side.SELL, OrderType.LIMIT, tp, bar, 0.0)
    if tp_px is not None:
        return close_position(pos, ExitReason.TAKE_PROFIT, bar_end, tp_px, Liquidity.MAKER, settings)
    range_stop = pos.range_stop_price
    broken_down = range_stop is not None and bar.close < range_stop
    broken_up = pos.range_resistance is not None and bar.close > pos.range_resistance
    if broken_down or broken_up:
        return close_position(pos, ExitReason.RANGE_BREAK, bar_end, bar.close * (1 - slippage), Liquidity.TAKER, settings)
    if pos.max_hold_until is not None and bar_end >= pos.max_hold_until:
        return close_position(pos, ExitReason.MAX_HOLD, bar_end, bar.close * (1 - slippage), Liquidity.TAKER, settings)

    # 4. trailing high after the stop check (no intra-bar look-ahead).
    pos.highest_price = max(pos.highest_price, bar.close if limit_entry_bar else bar.high)
    return []


def _filled_during(pos: ManagedPosition, start: datetime, end: datetime) -> bool:
    """A level filled inside [start, end): backtest and paper fills carry the bar's open time, live fills
    the venue's time (a partly booked level: its first part's)."""
    return any(lv.fill_ts is not None and start <= lv.fill_ts < end for lv in pos.entry_levels)


def step(pos: ManagedPosition, bar: Bar, settings: Settings) -> list[PositionEvent]:
    """Advance one bar (starting at/after the signal bar's close). Returns what happened, in order."""
    if pos.status == "closed":
        return []
    if not begin_bar(pos, bar):
        raise ValueError(f"{pos.position_id}: bars must move forward ({bar.ts} after {pos.last_bar_ts})")
    was_flat = pos.quantity == 0
    events = enter(pos, bar, settings) if pos.resting_levels else []
    if pos.quantity == 0:
        if not pos.resting_levels:
            pos.status = "closed"  # every level expired unfilled: nothing was bought
        return events
    return events + manage_exits(pos, bar, settings, entry_bar=was_flat)


def end_of_data(
    pos: ManagedPosition, last_bar: Bar, settings: Settings, reason: ExitReason = ExitReason.END_OF_DATA
) -> list[PositionEvent]:
    """The data ran out (or stops for a hole: `reason` DATA_HOLE) with the position open: mark it out at
    the last close (a taker exit); resting entry levels are cancelled (Expired "exit" events), so an
    unfilled entry never fills on a price after the hole."""
    if pos.status == "closed":
        return []
    bar_end = last_bar.ts + (last_bar.duration or timeframe_duration(pos.timeframe))
    if pos.quantity == 0:
        events: list[PositionEvent] = []
        for i, lv in enumerate(pos.entry_levels):
            if lv.resting:
                lv.expired = True
                events.append(Expired(i, lv.client_order_id, bar_end, "exit"))
        pos.resting_levels = 0
        pos.status = "closed"
        return events
    px = last_bar.close * (1 - settings.execution.slippage)
    return close_position(pos, reason, bar_end, px, Liquidity.TAKER, settings)


__all__ = [
    "Bar",
    "EntryLevel",
    "Exited",
    "Expired",
    "Filled",
    "ManagedPosition",
    "PositionEvent",
    "apply_entry_fill",
    "apply_partial_entry_fill",
    "begin_bar",
    "close_position",
    "complete_entry_level",
    "end_of_data",
    "enter",
    "entry_liquidity",
    "fee_rate",
    "fill_fee",
    "fill_price",
    "manage_exits",
    "open_position",
    "step",
    "stop_fill_price",
]
