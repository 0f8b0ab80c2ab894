"""Position-management rules: hand-built bars for each exit type, a real BTC DCA grid, no look-ahead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from core.domain import ExitReason, OrderType, Scores, Side, Signal, StrategyName, TradePlan
from core.positions import (
    Bar,
    Exited,
    Expired,
    Filled,
    ManagedPosition,
    fill_price,
    open_position,
    step,
)
from core.settings import load_settings

S = load_settings()
MAKER, TAKER, SLIP = 0.0025, 0.0040, 0.0005
T0 = datetime(2024, 1, 1, tzinfo=UTC)  # signal bar open; it closes at T0 + 1h
H = timedelta(hours=1)


def signal(
    entry_type: OrderType = OrderType.MARKET,
    prices: tuple[float, ...] = (100.0,),
    tp: float = 0.10,
    sl: float = 0.05,
    trailing: float | None = None,
    hold: timedelta = timedelta(hours=72),
    expiry: timedelta | None = None,
    support: float | None = None,
    resistance: float | None = None,
    strategy: StrategyName = StrategyName.SWING,
    price: float = 100.0,
    ts: datetime = T0,
) -> Signal:
    plan = TradePlan(entry_type=entry_type, entry_prices=prices, take_profit_pct=tp, stop_loss_pct=sl,
                     trailing_stop_pct=trailing, max_hold=hold, entry_expiry=expiry, range_support=support,
                     range_resistance=resistance)
    return Signal(symbol="BTC", strategy=strategy, timeframe="1h", ts=ts, price=price, plan=plan)


def scores_of(sig: Signal) -> Scores:
    return Scores(confidence=0.7, take_profit_pct=sig.plan.take_profit_pct, stop_loss_pct=sig.plan.stop_loss_pct)


def bar(i: int, o: float, h: float, lo: float, c: float) -> Bar:
    """The i-th bar after the signal bar (i=0 starts when the signal bar closes)."""
    return Bar(T0 + H * (i + 1), o, h, lo, c)


def run(pos: ManagedPosition, bars: list[Bar]) -> list:
    events: list = []
    for b in bars:
        events += step(pos, b, S)
    return events


def exited(events: list) -> Exited:
    out = [e for e in events if isinstance(e, Exited)]
    assert len(out) == 1
    return out[0]


def test_fill_price_when_limit_buy_bar_opens_below_then_fills_at_open():
    b = Bar(T0, 98.0, 99.0, 97.0, 98.5)
    assert fill_price(Side.BUY, OrderType.LIMIT, 100.0, b, SLIP) == 98.0
    assert fill_price(Side.BUY, OrderType.LIMIT, 97.5, b, SLIP) == 97.5
    assert fill_price(Side.BUY, OrderType.LIMIT, 96.9, b, SLIP) is None
    assert fill_price(Side.SELL, OrderType.LIMIT, 95.0, b, SLIP) == 98.0  # sell gapped through: the open
    assert fill_price(Side.BUY, OrderType.MARKET, None, b, SLIP) == pytest.approx(98.0 * 1.0005)


def test_step_when_market_entry_then_fills_next_open_with_slippage_and_taker_fee():
    pos = open_position(signal(), scores_of(signal()), 1000.0, S)
    events = step(pos, bar(0, 101.0, 102.0, 100.5, 101.5), S)
    f = events[0]
    assert isinstance(f, Filled)
    # 101 * 1.0005 = 101.0505; quantity = 1000 / 100 (reference price) = 10; fee = 1010.505 * 0.004
    assert f.price == pytest.approx(101.0505)
    assert f.quantity == pytest.approx(10.0)
    assert f.fee == pytest.approx(1010.505 * TAKER)
    assert f.liquidity == "taker"
    assert pos.status == "open" and pos.stop_price == pytest.approx(101.0505 * 0.95)


def test_step_when_high_reaches_take_profit_then_exits_at_tp_with_maker_fee():
    sig = signal()
    pos = open_position(sig, scores_of(sig), 1000.0, S)
    # entry 100 * 1.0005 = 100.05; TP = 110.055; bar 2 high 111 reaches it, opens below it.
    events = run(pos, [bar(0, 100.0, 101.0, 99.0, 100.5), bar(1, 100.5, 105.0, 100.0, 104.0),
                       bar(2, 104.0, 111.0, 103.0, 108.0)])
    e = exited(events)
    assert e.reason is ExitReason.TAKE_PROFIT
    assert e.price == pytest.approx(110.055)
    assert e.fee == pytest.approx(110.055 * 10 * MAKER)
    assert e.ts == T0 + H * 4  # close of bar 2
    # net = (110.055 - 100.05) * 10 - 100.05*10*0.004 - 110.055*10*0.0025
    assert pos.net_pnl == pytest.approx(100.05 - 4.002 - 2.751375)


def test_step_when_tp_gapped_up_then_fills_at_open():
    sig = signal()
    pos = open_position(sig, scores_of(sig), 1000.0, S)
    events = run(pos, [bar(0, 100.0, 101.0, 99.0, 100.5), bar(1, 112.0, 113.0, 111.0, 112.5)])
    assert exited(events).price == 112.0 and exited(events).reason is ExitReason.TAKE_PROFIT


def test_step_when_low_reaches_stop_then_exits_at_stop_less_slippage_with_taker_fee():
    sig = signal()
    pos = open_position(sig, scores_of(sig), 1000.0, S)
    # entry 100.05; SL = 100.05 * 0.95 = 95.0475; bar 1 low 94 reaches it; opened above it.
    e = exited(run(pos, [bar(0, 100.0, 101.0, 99.0, 100.5), bar(1, 100.0, 100.2, 94.0, 96.0)]))
    assert e.reason is ExitReason.STOP_LOSS
    assert e.price == pytest.approx(95.0475 * (1 - SLIP))
    assert e.fee == pytest.approx(95.0475 * (1 - SLIP) * 10 * TAKER)


def test_step_when_gap_through_stop_then_fills_at_open_not_stop():
    sig = signal()
    pos = open_position(sig, scores_of(sig), 1000.0, S)
    e = exited(run(pos, [bar(0, 100.0, 101.0, 99.0, 100.5), bar(1, 90.0, 91.0, 89.0, 90.5)]))
    assert e.reason is ExitReason.STOP_LOSS
    assert e.price == pytest.approx(90.0 * (1 - SLIP))  # worse than the 95.05 stop


def test_step_when_tp_and_stop_inside_one_bar_then_stop_first():
    sig = signal()
    pos = open_position(sig, scores_of(sig), 1000.0, S)
    e = exited(run(pos, [bar(0, 100.0, 101.0, 99.0, 100.5), bar(1, 100.0, 120.0, 80.0, 100.0)]))
    assert e.reason is ExitReason.STOP_LOSS


def test_step_when_price_rises_then_falls_then_trailing_stop_exits():
    sig = signal(tp=0.50, sl=0.05, trailing=0.07)
    pos = open_position(sig, scores_of(sig), 1000.0, S)
    bars = [
        bar(0, 100.0, 101.0, 99.5, 100.8),  # entry 100.05; highest -> 101
        bar(1, 100.8, 110.0, 100.5, 109.0),  # stop checked at max(95.05, 101*0.93=93.93) first; highest -> 110
        bar(2, 109.0, 109.5, 101.0, 102.0),  # trailing 110 * 0.93 = 102.3 > SL 95.05: low 101 reaches it
    ]
    events = run(pos, bars)
    e = exited(events)
    assert e.reason is ExitReason.TRAILING_STOP
    assert e.price == pytest.approx(102.3 * (1 - SLIP))


def test_step_when_new_high_and_drop_in_same_bar_then_trailing_uses_previous_high():
    sig = signal(tp=0.50, sl=0.05, trailing=0.07)
    pos = open_position(sig, scores_of(sig), 1000.0, S)
    # bar 1: high 110 and low 101.5. With the old highest 101 the trailing stop is 93.93 (no exit); using
    # this bar's own high (102.3) would be intra-bar look-ahead and would exit.
    events = run(pos, [bar(0, 100.0, 101.0, 99.5, 100.8), bar(1, 100.8, 110.0, 101.5, 103.0)])
    assert not any(isinstance(e, Exited) for e in events)
    assert pos.highest_price == 110.0


def test_step_when_max_hold_reached_then_exits_at_close_of_that_bar():
    sig = signal(hold=timedelta(hours=3))
    pos = open_position(sig, scores_of(sig), 1000.0, S)
    # entry at bar 0 open (T0+1h); hold 3h -> the bar ending at T0+4h is bar 2.
    bars = [bar(i, 100.0, 101.0, 99.0, 100.0 + i) for i in range(5)]
    events = run(pos, bars)
    e = exited(events)
    assert e.reason is ExitReason.MAX_HOLD
    assert e.ts == T0 + H * 4
    assert e.price == pytest.approx(102.0 * (1 - SLIP))
    assert pos.last_bar_ts == bars[2].ts


def test_step_when_close_below_channel_stop_then_range_break_exit_at_close():
    # support 95 -> range stop 95 * 0.99 = 94.05; the position's own SL is wider (12%).
    sig = signal(strategy=StrategyName.CHANNEL, tp=0.05, sl=0.12, support=95.0, resistance=106.0)
    pos = open_position(sig, scores_of(sig), 1000.0, S)
    e = exited(run(pos, [bar(0, 100.0, 101.0, 99.0, 100.0), bar(1, 99.0, 99.5, 93.0, 93.5)]))
    assert e.reason is ExitReason.RANGE_BREAK
    assert e.price == pytest.approx(93.5 * (1 - SLIP))


def test_step_when_close_above_resistance_then_range_break_exit():
    sig = signal(strategy=StrategyName.CHANNEL, tp=0.30, sl=0.12, support=95.0, resistance=104.0)
    pos = open_position(sig, scores_of(sig), 1000.0, S)
    e = exited(run(pos, [bar(0, 100.0, 101.0, 99.0, 100.0), bar(1, 100.0, 105.0, 99.5, 104.5)]))
    assert e.reason is ExitReason.RANGE_BREAK and e.price == pytest.approx(104.5 * (1 - SLIP))


def test_step_when_grid_levels_not_reached_then_expire_and_position_closes_unfilled():
    sig = signal(OrderType.LIMIT, prices=(95.0, 94.0), expiry=timedelta(hours=2), strategy=StrategyName.DCA)
    pos = open_position(sig, scores_of(sig), 1000.0, S)
    events = run(pos, [bar(0, 100.0, 101.0, 96.0, 100.0), bar(1, 100.0, 101.0, 96.0, 100.0),
                       bar(2, 100.0, 101.0, 90.0, 100.0)])  # bar 2 starts at expiry: no fill despite low 90
    assert [type(e) for e in events] == [Expired, Expired]
    assert pos.status == "closed" and pos.quantity == 0 and pos.exit_reason is None


def test_step_when_limit_fills_on_bar_then_tp_needs_close_above_tp():
    sig = signal(OrderType.LIMIT, prices=(100.0,), tp=0.05, expiry=timedelta(hours=24), strategy=StrategyName.DCA)
    pos = open_position(sig, scores_of(sig), 1000.0, S)
    # the high 106 may have come before the fill at 100: TP 105 not taken on the fill bar (close 103)...
    events = step(pos, bar(0, 104.0, 106.0, 99.0, 103.0), S)
    assert [type(e) for e in events] == [Filled]
    assert pos.highest_price == 103.0  # ...and the trailing high uses the close
    # ...but is on the next bar.
    assert exited(step(pos, bar(1, 103.0, 105.5, 102.0, 104.0), S)).reason is ExitReason.TAKE_PROFIT


def test_step_when_bar_before_signal_close_then_refuses_lookahead():
    sig = signal()
    pos = open_position(sig, scores_of(sig), 1000.0, S)
    with pytest.raises(ValueError, match="before the signal bar closed"):
        step(pos, Bar(T0, 100.0, 101.0, 99.0, 100.0), S)
    step(pos, bar(1, 100.0, 101.0, 99.0, 100.0), S)
    with pytest.raises(ValueError, match="move forward"):
        step(pos, bar(0, 100.0, 101.0, 99.0, 100.0), S)


def test_open_position_when_notional_not_positive_then_clear_error():
    with pytest.raises(ValueError, match="notional"):
        open_position(signal(), scores_of(signal()), 0.0, S)


def test_managed_position_when_round_tripped_through_dict_then_equal():
    sig = signal(OrderType.LIMIT, prices=(100.0, 99.0), expiry=timedelta(hours=24), strategy=StrategyName.DCA)
    pos = open_position(sig, scores_of(sig), 500.0, S)
    step(pos, bar(0, 100.0, 100.5, 99.5, 100.2), S)
    assert ManagedPosition.from_dict(pos.to_dict()) == pos


# --- a real BTC drop: 2024-01-03 12:00 UTC, close 42789.38 (1h bars) ---------------------------------------

BTC_SIGNAL_TS = datetime(2024, 1, 3, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def btc_bars() -> list[Bar]:
    df = (
        pl.scan_parquet(S.data.data_dir / "ohlcv_1h.parquet")
        .filter(pl.col("symbol") == "BTC", pl.col("ts") > BTC_SIGNAL_TS,
                pl.col("ts") < BTC_SIGNAL_TS + timedelta(days=4))
        .sort("ts")
        .collect()
    )
    return [Bar(r["ts"], r["open"], r["high"], r["low"], r["close"]) for r in df.iter_rows(named=True)]


def dca_signal(tp: float, sl: float = 0.08) -> Signal:
    p = 42789.38
    prices = tuple(p * (1 - k * 0.01) for k in range(5))  # 42789.38, 42361.49, 41933.59, 41505.70, 41077.80
    return signal(OrderType.LIMIT, prices=prices, tp=tp, sl=sl, hold=timedelta(hours=72),
                  expiry=timedelta(hours=24), strategy=StrategyName.DCA, price=p, ts=BTC_SIGNAL_TS)


def test_step_when_real_btc_drop_dca_grid_then_two_levels_fill_and_max_hold_exit(btc_bars):
    sig = dca_signal(tp=0.10)
    pos = open_position(sig, scores_of(sig), 1000.0, S)
    events = run(pos, btc_bars)
    fills = [e for e in events if isinstance(e, Filled)]
    # Bar 13:00 (O 42789.39 L 42310): L0 42789.38 fills at min(42789.38, open) = 42789.38, L1 42361.4862 too.
    # No later low reaches L2 41933.59 (lowest 42000 at 18:00); L2..L4 expire at 2024-01-04 13:00.
    assert [(f.level, f.ts.hour, round(f.price, 4)) for f in fills] == [(0, 13, 42789.38), (1, 13, 42361.4862)]
    expired = [e for e in events if isinstance(e, Expired)]
    assert [e.level for e in expired] == [2, 3, 4] and expired[0].ts == datetime(2024, 1, 4, 13, tzinfo=UTC)
    # Equal notional 200 per level -> avg = harmonic mean = 2 / (1/42789.38 + 1/42361.4862) = 42574.36...
    avg = 2 / (1 / 42789.38 + 1 / 42361.4862)
    assert pos.avg_price == pytest.approx(avg)
    assert pos.take_profit_price == pytest.approx(avg * 1.10)  # 46831.8: the highest high (44729.58) is below
    assert pos.stop_loss_price == pytest.approx(avg * 0.92)  # 39168.4: the lowest low after (42000) is above
    # Entry 2024-01-03 13:00 + 72h -> exit at the close of the 2024-01-06 12:00 bar (43607.96) less slippage.
    e = exited(events)
    assert e.reason is ExitReason.MAX_HOLD and e.ts == datetime(2024, 1, 6, 13, tzinfo=UTC)
    exit_px = 43607.96 * (1 - SLIP)
    assert e.price == pytest.approx(exit_px)
    qty = 200 / 42789.38 + 200 / 42361.4862
    # fees: 2 x 200 x 0.25% = 1.00 entry (maker) + exit value x 0.40% (taker)
    fees = 1.0 + exit_px * qty * TAKER
    assert pos.fees == pytest.approx(fees)
    assert pos.net_pnl == pytest.approx((exit_px - avg) * qty - fees)  # about +7.98 on 400 invested


def test_step_when_real_btc_drop_with_tp_3pct_then_tp_hit_on_2024_01_04_15h(btc_bars):
    sig = dca_signal(tp=0.03)
    pos = open_position(sig, scores_of(sig), 1000.0, S)
    events = run(pos, btc_bars)
    avg = 2 / (1 / 42789.38 + 1 / 42361.4862)
    tp = avg * 1.03  # 43851.59: the 14:00 high 43753.15 misses it, the 15:00 bar (O 43676.07 H 44329.99) hits it
    e = exited(events)
    assert e.reason is ExitReason.TAKE_PROFIT
    assert e.ts == datetime(2024, 1, 4, 16, tzinfo=UTC)
    assert e.price == pytest.approx(tp)
    assert e.fee == pytest.approx(tp * pos.quantity * MAKER)


def test_step_when_future_bars_truncated_then_state_up_to_t_unchanged(btc_bars):
    sig = dca_signal(tp=0.10)
    full = open_position(sig, scores_of(sig), 1000.0, S)
    cut = open_position(sig, scores_of(sig), 1000.0, S)
    ev_full = [step(full, b, S) for b in btc_bars]
    ev_cut = [step(cut, b, S) for b in btc_bars[:30]]
    assert ev_full[:30] == ev_cut  # events up to bar 30 do not depend on later bars
    assert cut.avg_price == full.avg_price and cut.highest_price <= full.highest_price
