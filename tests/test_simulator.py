"""The one trade simulator on real BTC candles: same answers as the position rules, finer bars, no
look-ahead into the signal bar, no bridging of data holes, simulate_many == simulate_trade."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from core.domain import ExitReason, OrderType, Scores, Signal, StrategyName, TradePlan
from core.errors import DataQualityError
from core.settings import load_settings
from core.simulator import rule_only_scores, simulate_many, simulate_trade

S = load_settings()
SLIP, TAKER = 0.0005, 0.0040
SIG_TS = datetime(2024, 1, 3, 12, tzinfo=UTC)
P = 42789.38


def dca(ts: datetime = SIG_TS, price: float = P, tp: float = 0.10, symbol: str = "BTC") -> Signal:
    plan = TradePlan(entry_type=OrderType.LIMIT, entry_prices=tuple(price * (1 - k * 0.01) for k in range(5)),
                     take_profit_pct=tp, stop_loss_pct=0.08, max_hold=timedelta(hours=72),
                     entry_expiry=timedelta(hours=24))
    return Signal(symbol=symbol, strategy=StrategyName.DCA, timeframe="1h", ts=ts, price=price, plan=plan)


def swing(ts: datetime, price: float, symbol: str = "BTC") -> Signal:
    plan = TradePlan(entry_type=OrderType.MARKET, entry_prices=(price,), take_profit_pct=0.15, stop_loss_pct=0.05,
                     trailing_stop_pct=0.07, max_hold=timedelta(hours=72))
    return Signal(symbol=symbol, strategy=StrategyName.SWING, timeframe="1h", ts=ts, price=price, plan=plan)


def read(tf: str, start: datetime, end: datetime, symbols: tuple[str, ...] = ("BTC",)) -> pl.DataFrame:
    return (
        pl.scan_parquet(S.data.data_dir / f"ohlcv_{tf}.parquet")
        .filter(pl.col("symbol").is_in(symbols), pl.col("ts") >= start, pl.col("ts") < end)
        .with_columns(pl.col("ts").dt.cast_time_unit("us"), pl.lit(tf).alias("timeframe"))
        .sort("symbol", "ts")
        .collect()
    )


@pytest.fixture(scope="module")
def btc_1h() -> pl.DataFrame:
    return read("1h", SIG_TS - timedelta(days=2), SIG_TS + timedelta(days=5))


def test_simulate_trade_when_real_dca_drop_then_max_hold_outcome_with_fees(btc_1h):
    out = simulate_trade(dca(), None, btc_1h, S)
    avg = 2 / (1 / 42789.38 + 1 / 42361.4862)  # two levels fill on the 13:00 bar (see test_positions)
    exit_px = 43607.96 * (1 - SLIP)
    qty = 200 / 42789.38 + 200 / 42361.4862
    assert out.filled and out.filled_levels == 2
    assert out.entry_ts == datetime(2024, 1, 3, 13, tzinfo=UTC)
    assert out.exit_reason is ExitReason.MAX_HOLD and out.exit_ts == datetime(2024, 1, 6, 13, tzinfo=UTC)
    assert out.entry_price == pytest.approx(avg) and out.exit_price == pytest.approx(exit_px)
    assert out.bars_held == 72 and out.hold_hours == 72.0
    assert out.gross_return == pytest.approx(exit_px / avg - 1)
    fees = 1.0 + exit_px * qty * TAKER
    assert out.net_return == pytest.approx(((exit_px - avg) * qty - fees) / (avg * qty))
    # MFE from the highest high of the held bars (44729.58 on 2024-01-04 22:00), MAE from the lowest (42000).
    assert out.max_favorable == pytest.approx(44729.58 / avg - 1)
    assert out.max_adverse == pytest.approx(42000.0 / avg - 1)


def test_simulate_trade_when_5m_bars_under_1h_signal_then_bars_inside_signal_bar_are_ignored():
    bars = read("5m", SIG_TS, SIG_TS + timedelta(days=4))
    out = simulate_trade(dca(), None, bars, S)
    # 5m bars from 12:00 to 12:55 belong to the signal bar; the first usable one starts at 13:00.
    assert out.entry_ts is not None and out.entry_ts >= SIG_TS + timedelta(hours=1)
    assert out.exit_reason is ExitReason.MAX_HOLD
    assert out.exit_ts == out.entry_ts + timedelta(hours=72)


def test_simulate_trade_when_data_ends_then_end_of_data_at_last_close(btc_1h):
    short = btc_1h.filter(pl.col("ts") < datetime(2024, 1, 4, 0, tzinfo=UTC))
    out = simulate_trade(dca(), None, short, S)
    last_close = short.get_column("close")[-1]
    assert out.exit_reason is ExitReason.END_OF_DATA
    assert out.exit_price == pytest.approx(last_close * (1 - SLIP))
    assert out.exit_ts == datetime(2024, 1, 4, 0, tzinfo=UTC)


def test_simulate_trade_when_hole_in_data_then_trade_ends_before_it():
    # BTC 1h has no bars from 2024-07-15 to 2024-09-07: a swing on 2024-07-14 18:00 must not bridge it.
    bars = read("1h", datetime(2024, 7, 13, tzinfo=UTC), datetime(2024, 9, 12, tzinfo=UTC))
    sig_ts = datetime(2024, 7, 14, 18, tzinfo=UTC)
    close = bars.filter(pl.col("ts") == sig_ts).get_column("close")[0]
    out = simulate_trade(swing(sig_ts, close), None, bars, S)
    assert out.exit_ts is not None and out.exit_ts <= datetime(2024, 7, 15, tzinfo=UTC)
    assert out.exit_reason in (ExitReason.END_OF_DATA, ExitReason.STOP_LOSS, ExitReason.TAKE_PROFIT,
                               ExitReason.TRAILING_STOP)


@pytest.mark.parametrize("bridged_hours, bridged", [(24, False), (48, True)])
def test_simulate_trade_when_hole_longer_or_shorter_than_max_bridged_gap_setting_then_ends_or_bridges(
    btc_1h, bridged_hours, bridged
):
    # A 30 h hole cut out of real bars 3 h after a swing entry: the setting (not a constant) decides.
    hole = (SIG_TS + timedelta(hours=3), SIG_TS + timedelta(hours=33))
    bars = btc_1h.filter((pl.col("ts") < hole[0]) | (pl.col("ts") >= hole[1]))
    close = bars.filter(pl.col("ts") == SIG_TS).get_column("close")[0]
    settings = load_settings(strategy={"max_bridged_gap": timedelta(hours=bridged_hours)})
    out = simulate_trade(swing(SIG_TS, close), None, bars, settings)
    assert out.filled and out.exit_ts is not None
    if bridged:
        assert out.exit_ts > hole[1]
    else:
        assert out.exit_reason is ExitReason.END_OF_DATA and out.exit_ts == hole[0]


def test_simulate_trade_when_grid_never_reached_then_not_filled(btc_1h):
    # A grid 20% under the market: nothing fills before the 24h expiry.
    out = simulate_trade(dca(price=P * 0.8), None, btc_1h, S)
    assert not out.filled and out.exit_reason is None and out.filled_levels == 0 and out.net_return == 0.0


def test_simulate_trade_when_scores_given_then_they_override_plan(btc_1h):
    sc = Scores(confidence=0.8, take_profit_pct=0.03, stop_loss_pct=0.08, hold=timedelta(hours=72))
    out = simulate_trade(dca(), sc, btc_1h, S)
    assert out.exit_reason is ExitReason.TAKE_PROFIT and out.exit_ts == datetime(2024, 1, 4, 16, tzinfo=UTC)


def test_simulate_trade_when_bars_have_nulls_then_clear_error(btc_1h):
    bad = btc_1h.with_columns(pl.when(pl.col("ts") == SIG_TS + timedelta(hours=3)).then(None)
                              .otherwise(pl.col("low")).alias("low"))
    with pytest.raises(DataQualityError, match="null"):
        simulate_trade(dca(), None, bad, S)


def test_simulate_trade_when_high_below_close_then_clear_error_naming_the_bar(btc_1h):
    bad = btc_1h.with_columns(pl.when(pl.col("ts") == SIG_TS + timedelta(hours=3)).then(1.0)
                              .otherwise(pl.col("high")).alias("high"))
    with pytest.raises(DataQualityError, match="inconsistent or non-positive OHLC"):
        simulate_trade(dca(), None, bad, S)


def test_simulate_many_when_many_signals_then_equals_simulate_trade_one_by_one():
    start, end = datetime(2024, 2, 1, tzinfo=UTC), datetime(2024, 3, 1, tzinfo=UTC)
    bars = read("1h", start, end, ("BTC", "ETH", "SOL"))
    # Signals on every 37th bar of each coin (DCA at the close, swing market entries): a spread of outcomes.
    picks = bars.filter(pl.int_range(pl.len()).over("symbol") % 37 == 5)
    sigs: list[Signal] = []
    for r in picks.iter_rows(named=True):
        sigs.append(dca(r["ts"], r["close"], symbol=r["symbol"]))
        sigs.append(swing(r["ts"], r["close"], symbol=r["symbol"]))
    many = simulate_many(sigs, bars, S)
    assert many.height == len(sigs)
    for sig, row in zip(sigs, many.iter_rows(named=True), strict=True):
        one = simulate_trade(sig, rule_only_scores(sig), bars, S)
        assert row["signal_id"] == sig.signal_id
        assert row["exit_reason"] == (None if one.exit_reason is None else one.exit_reason.value)
        assert row["net_return"] == pytest.approx(one.net_return)
        assert row["bars_held"] == one.bars_held
    assert many.get_column("exit_reason").n_unique() >= 3


def test_simulate_many_when_given_detect_all_frame_then_one_outcome_per_detection():
    from core.strategies.registry import detect_all, signals_from_frame

    bars = read("1h", datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 4, 1, tzinfo=UTC), ("BTC", "ETH", "SOL", "DOGE"))
    rows = detect_all(bars, S)
    assert rows.height > 0
    out = simulate_many(rows, bars, S)
    assert out.height == rows.height
    assert out.get_column("signal_id").to_list() == [s.signal_id for s in signals_from_frame(rows)]
    filled = out.filter(pl.col("filled"))
    # every filled trade enters at or after the signal bar's close and exits after entering
    assert (filled.get_column("entry_ts") >= filled.get_column("ts") + timedelta(hours=1)).all()
    assert (filled.get_column("exit_ts") > filled.get_column("entry_ts")).all()


def test_simulate_many_when_bars_of_two_timeframes_mixed_then_clear_error():
    start = datetime(2024, 1, 3, tzinfo=UTC)
    mixed = pl.concat([read("1h", start, start + timedelta(days=2)),
                       read("15m", start, start + timedelta(days=2))])
    with pytest.raises(DataQualityError, match="duplicate"):
        simulate_many([dca()], mixed, S)
