"""Paper venue: idempotent submit, fills by the shared rules, fees once, deterministic ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from core.domain import Order, OrderStatus, OrderType, Scores, Side, Signal, StrategyName, TradePlan
from core.errors import DataQualityError, VenueError
from core.positions import Bar, Filled, open_position, step
from core.settings import load_settings
from core.venues.base import Venue
from core.venues.paper import PaperVenue

S = load_settings()
T0 = datetime(2024, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)


def order(coid: str = "o1", kind: OrderType = OrderType.LIMIT, price: float | None = 100.0, qty: float = 2.0,
          created: datetime = T0, expires: datetime | None = None, side: Side = Side.BUY) -> Order:
    return Order(client_order_id=coid, symbol="BTC", side=side, order_type=kind, quantity=qty, price=price,
                 strategy=StrategyName.DCA, position_id="p1", created_ts=created, expires_ts=expires)


def test_paper_venue_when_built_then_implements_venue_contract():
    assert isinstance(PaperVenue(S), Venue)


def test_submit_when_same_client_order_id_twice_then_one_order():
    v = PaperVenue(S)
    a = v.submit(order())
    b = v.submit(order(price=90.0))  # a retry with the same id is the same order, whatever it says
    assert a == b and a.status is OrderStatus.OPEN and a.price == 100.0
    assert len(v.open_orders()) == 1


def test_on_bar_when_low_reaches_limit_then_fills_once_at_limit_with_maker_fee():
    v = PaperVenue(S, cash=1000.0)
    v.submit(order())
    assert v.on_bar("BTC", Bar(T0 - H, 100.0, 101.0, 95.0, 100.0)) == ([], [])  # bar before the order
    assert v.on_bar("BTC", Bar(T0, 101.0, 102.0, 100.5, 101.0))[0] == []  # low 100.5 > 100
    fills, _ = v.on_bar("BTC", Bar(T0 + H, 101.0, 101.5, 99.0, 100.0))
    assert [(f.fill_id, f.price, f.quantity, f.liquidity) for f in fills] == [("o1:f1", 100.0, 2.0, "maker")]
    assert fills[0].fee == pytest.approx(200.0 * 0.0025)
    assert v.on_bar("BTC", Bar(T0 + 2 * H, 100.0, 100.0, 90.0, 95.0))[0] == []  # never twice
    assert v.get_order("o1").status is OrderStatus.FILLED
    assert v.balances() == pytest.approx({"USDT": 1000.0 - 200.0 - 0.5, "BTC": 2.0})
    assert len(v.fills_since("o1")) == 1


def test_on_bar_when_bar_opens_below_limit_then_fills_at_open():
    v = PaperVenue(S)
    v.submit(order())
    fills, _ = v.on_bar("BTC", Bar(T0, 97.0, 98.0, 96.0, 97.5))
    assert fills[0].price == 97.0


def test_on_bar_when_market_order_then_next_open_plus_slippage_taker_fee():
    v = PaperVenue(S)
    v.submit(order(kind=OrderType.MARKET, price=None))
    fills, _ = v.on_bar("BTC", Bar(T0, 50.0, 51.0, 49.0, 50.5))
    assert fills[0].price == pytest.approx(50.0 * 1.0005) and fills[0].liquidity == "taker"
    assert fills[0].fee == pytest.approx(50.0 * 1.0005 * 2.0 * 0.004)


def test_on_bar_when_order_expired_then_no_fill_even_if_reached():
    v = PaperVenue(S)
    v.submit(order(expires=T0 + 2 * H))
    fills, expired = v.on_bar("BTC", Bar(T0 + 2 * H, 100.0, 100.0, 80.0, 90.0))
    assert fills == [] and [o.status for o in expired] == [OrderStatus.EXPIRED]
    assert v.open_orders() == []


def test_cancel_when_final_then_unchanged_and_unknown_raises():
    v = PaperVenue(S)
    v.submit(order())
    assert v.cancel("o1").status is OrderStatus.CANCELLED
    assert v.cancel("o1").status is OrderStatus.CANCELLED
    with pytest.raises(VenueError, match="unknown order"):
        v.cancel("nope")


def test_submit_when_limit_without_price_then_venue_error():
    with pytest.raises(VenueError, match="needs a price"):
        PaperVenue(S).submit(order(price=None))


def test_execute_when_called_twice_then_one_fill_and_one_fee():
    v = PaperVenue(S, cash=0.0)
    v.submit(order("x", OrderType.MARKET, price=None, side=Side.SELL))
    a = v.execute("x", T0, 105.0, "taker")
    b = v.execute("x", T0, 105.0, "taker")
    assert a == b and len(v.fills_since()) == 1
    assert v.balances()["USDT"] == pytest.approx(210.0 - 210.0 * 0.004)


def test_on_bar_when_real_btc_grid_then_same_fills_as_position_rules():
    # The venue and core.positions.step share fill_price: a 5-level grid under a real drop fills the same.
    sig_ts = datetime(2024, 1, 3, 12, tzinfo=UTC)
    p = 42789.38
    plan = TradePlan(entry_type=OrderType.LIMIT, entry_prices=tuple(p * (1 - k * 0.004) for k in range(5)),
                     take_profit_pct=0.5, stop_loss_pct=0.5, max_hold=timedelta(hours=72),
                     entry_expiry=timedelta(hours=24))
    sig = Signal(symbol="BTC", strategy=StrategyName.DCA, timeframe="1h", ts=sig_ts, price=p, plan=plan)
    pos = open_position(sig, Scores(confidence=0.7, take_profit_pct=0.5, stop_loss_pct=0.5), 1000.0, S)
    v = PaperVenue(S)
    for lv in pos.entry_levels:
        v.submit(order(lv.client_order_id, price=lv.price, qty=lv.quantity, created=pos.created_ts,
                       expires=pos.expiry_ts))
    df = (pl.scan_parquet(S.data.data_dir / "ohlcv_1h.parquet")
          .filter(pl.col("symbol") == "BTC", pl.col("ts") > sig_ts, pl.col("ts") <= sig_ts + timedelta(hours=30))
          .sort("ts").collect())
    venue_fills, rule_fills = [], []
    for r in df.iter_rows(named=True):
        b = Bar(r["ts"], r["open"], r["high"], r["low"], r["close"])
        venue_fills += v.on_bar("BTC", b)[0]
        rule_fills += [e for e in step(pos, b, S) if isinstance(e, Filled)]
    # Levels 42789.38, 42618.22, 42447.06, 42275.90, 42104.74: the 13:00 bar (low 42310) reaches the first
    # three, the 14:00 bar (low 42050) the last two.
    assert [(e.level, e.ts.hour) for e in rule_fills] == [(0, 13), (1, 13), (2, 13), (3, 14), (4, 14)]
    assert [(f.client_order_id, f.ts, f.price, f.fee) for f in venue_fills] == [
        (e.client_order_id, e.ts, e.price, e.fee) for e in rule_fills
    ]


def test_on_bar_when_bar_inconsistent_then_data_quality_error_and_nothing_filled():
    v = PaperVenue(S)
    v.submit(order())
    with pytest.raises(DataQualityError, match="inconsistent"):
        v.on_bar("BTC", Bar(T0, 100.0, 99.0, 98.0, 100.5))  # high below close
    assert v.fills_since() == [] and len(v.open_orders()) == 1
