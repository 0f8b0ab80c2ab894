"""Edge features (issue 12): each one unchanged when the future is cut off, and equal to a hand computation."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from core.domain import StrategyName
from core.settings import load_settings
from core.strategies.base import assert_no_lookahead, cut_points_every
from core.strategies.registry import FEATURE_NAMES, detect_all
from models.dataset import build_events, load_history
from models.edge_features import EDGE_CONTEXT_FEATURES, MIN_SETTLED, OUTCOME_FEATURES, edge_context_features, outcome_features
from models.features import CONTEXT_FEATURES, event_features
from models.labels import label_events

SYMBOLS = ["BTC", "ETH", "SOL", "DOGE", "LINK", "XRP"]
START, END = datetime(2023, 3, 1, tzinfo=UTC), datetime(2023, 7, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def bars(real_candles) -> pl.DataFrame:
    return real_candles("1h", SYMBOLS, START, END)


@pytest.mark.parametrize("feature", EDGE_CONTEXT_FEATURES)
def test_edge_context_feature_when_future_bars_removed_then_past_values_unchanged(bars: pl.DataFrame, feature: str) -> None:
    full = edge_context_features(bars, "1h")
    late = full.filter(pl.col("ts") > START + timedelta(days=31))
    assert late[feature].null_count() < late.height * 0.05  # the feature exists, or the test proves nothing
    assert_no_lookahead(
        lambda b: edge_context_features(b, "1h").select("symbol", "ts", feature).sort("symbol", "ts"),
        bars,
        cut_points_every(bars, 4),
    )


def test_outcome_features_when_future_bars_removed_then_past_values_unchanged(bars: pl.DataFrame) -> None:
    # The whole path on each prefix: detect -> label (the simulator sees only bars <= cut) -> own outcomes.
    settings = load_settings()

    def own(b: pl.DataFrame) -> pl.DataFrame:
        rows = detect_all(b, settings).filter(pl.col("strategy") == "swing")
        labelled = label_events(rows, b, settings)
        return outcome_features(labelled, labelled).sort("ts", "symbol")

    full = own(bars)
    for f in OUTCOME_FEATURES:
        assert full[f].null_count() < full.height * 0.3, f  # most events have a settled history
    assert_no_lookahead(own, bars, cut_points_every(bars, 4))


def _settled(hours: list[int], exits: list[int], returns: list[float], symbol: str = "ETH") -> pl.DataFrame:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    return pl.DataFrame({
        "symbol": [symbol] * len(hours), "strategy": ["swing"] * len(hours),
        "ts": [t0 + timedelta(hours=h) for h in hours], "exit_ts": [t0 + timedelta(hours=h) for h in exits],
        "filled": [True] * len(hours), "net_return": returns,
    })  # fmt: skip


def test_outcome_features_when_outcome_settles_at_signal_bar_then_not_used() -> None:
    # Five trades settle at hours 1..5; a signal at hour 5 may only use the four settled before it.
    assert MIN_SETTLED == 5
    outcomes = _settled([0, 0, 0, 0, 0], [1, 2, 3, 4, 5], [0.02, -0.01, 0.03, -0.02, 0.05])
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    events = pl.DataFrame({"symbol": ["ETH", "ETH", "SOL"], "strategy": ["swing"] * 3,
                           "ts": [t0 + timedelta(hours=6), t0 + timedelta(hours=5), t0 + timedelta(hours=6)]})  # fmt: skip
    # Act
    out = outcome_features(events, outcomes)
    # Assert: hour 6 sees all five (3 wins; mean 0.014); hour 5 sees four (< MIN_SETTLED: null); SOL has no coin history
    assert out["ts"].to_list() == events["ts"].to_list()  # row order kept
    assert out.row(0, named=True)["own_strategy_win_rate"] == pytest.approx(0.6)
    assert out.row(0, named=True)["own_strategy_mean_return"] == pytest.approx(0.014)
    assert out.row(0, named=True)["own_coin_win_rate"] == pytest.approx(0.6)
    assert out.row(1, named=True)["own_strategy_win_rate"] is None
    assert out.row(2, named=True)["own_strategy_win_rate"] == pytest.approx(0.6)
    assert out.row(2, named=True)["own_coin_win_rate"] is None


def test_outcome_features_when_more_than_window_settled_then_only_last_n_count() -> None:
    # 25 settled trades: the first 5 lost, the last 20 won -> strategy window (20) says 1.0, coin window (10) 1.0
    n = 25
    outcomes = _settled([0] * n, list(range(1, n + 1)), [-0.01] * 5 + [0.01] * 20)
    events = pl.DataFrame({"symbol": ["ETH"], "strategy": ["swing"], "ts": [datetime(2024, 1, 3, tzinfo=UTC)]})
    row = outcome_features(events, outcomes).row(0, named=True)
    assert row["own_strategy_win_rate"] == 1.0 and row["own_coin_mean_return"] == pytest.approx(0.01)


def test_edge_context_features_when_hand_computed_on_real_bars_then_equal(bars: pl.DataFrame) -> None:
    t = datetime(2023, 5, 20, 13, tzinfo=UTC)
    closes = {
        s: dict(bars.filter(pl.col("symbol") == s).select("ts", "close").iter_rows()) for s in SYMBOLS
    }
    # 24h log return over the window (t - 24h, t]: log(close_t / close_{t-24h}) when every bar is present
    rets = {s: math.log(c[t] / c[t - timedelta(hours=24)]) for s, c in closes.items()}
    order = sorted(rets, key=rets.__getitem__)
    got = edge_context_features(bars, "1h").filter(pl.col("ts") == t)
    ranks = dict(zip(got["symbol"], got["xs_rank_ret_24h"], strict=True))
    for i, s in enumerate(order):
        assert ranks[s] == pytest.approx((i + 1) / len(SYMBOLS))
    btc = closes["BTC"]
    week = [v for k, v in btc.items() if t - timedelta(days=7) < k <= t]
    month = [v for k, v in btc.items() if t - timedelta(days=30) < k <= t]
    row = got.row(0, named=True)
    assert row["mkt_btc_trend_7d"] == pytest.approx(btc[t] / (sum(week) / len(week)) - 1)
    state = (math.copysign(1, btc[t] / (sum(week) / len(week)) - 1) + math.copysign(1, btc[t] / (sum(month) / len(month)) - 1)) / 2
    assert row["mkt_btc_trend_state"] == round(state)
    assert (row["cal_hour"], row["cal_dow"]) == (13.0, 6.0)  # 2023-05-20 was a Saturday


def test_coin_vol_pctile_when_hand_computed_then_rank_within_past_30_days(bars: pl.DataFrame) -> None:
    t = datetime(2023, 6, 10, 7, tzinfo=UTC)
    out = edge_context_features(bars, "1h")
    eth = bars.filter(pl.col("symbol") == "ETH").sort("ts").with_columns(_r=pl.col("close").log().diff())
    vols = eth.with_columns(v=pl.col("_r").rolling_std_by("ts", "24h")).select("ts", "v")
    window = vols.filter((pl.col("ts") > t - timedelta(days=30)) & (pl.col("ts") <= t))["v"].drop_nulls().to_list()
    now = window[-1]
    expected = (sum(x < now for x in window) + (sum(x == now for x in window) + 1) / 2) / len(window)
    got = out.filter((pl.col("symbol") == "ETH") & (pl.col("ts") == t))["coin_vol_pctile_30d"][0]
    assert got == pytest.approx(expected)


def test_build_events_when_edge_and_outcome_features_enabled_then_they_are_model_inputs(bars: pl.DataFrame) -> None:
    on = build_events(bars, load_settings(ml={"edge_features": True, "outcome_features": True}), ("swing",))["swing"]
    off = build_events(bars, load_settings(), ("swing",))["swing"]
    assert on.feature_names == [*off.feature_names, *EDGE_CONTEXT_FEATURES, *OUTCOME_FEATURES]
    assert not (set(EDGE_CONTEXT_FEATURES) | set(OUTCOME_FEATURES)) & set(off.feature_names)
    assert set(CONTEXT_FEATURES) <= set(off.feature_names)
    late = on.events.filter(pl.col("ts") > START + timedelta(days=31))
    for f in (*EDGE_CONTEXT_FEATURES, *OUTCOME_FEATURES):
        assert late[f].null_count() < late.height * 0.3, f


def test_event_features_when_edge_features_on_and_future_cut_then_unchanged(bars: pl.DataFrame) -> None:
    # The training path (detect -> event_features with the edge context) on every prefix.
    settings = load_settings(ml={"edge_features": True})

    def events(b: pl.DataFrame) -> pl.DataFrame:
        rows = detect_all(b, settings).filter(pl.col("strategy") == "swing")
        return event_features(rows, b, FEATURE_NAMES[StrategyName.SWING], settings).sort("ts", "symbol")

    assert set(EDGE_CONTEXT_FEATURES) <= set(events(bars).columns)
    assert_no_lookahead(events, bars, cut_points_every(bars, 3))


def test_load_history_when_train_all_symbols_then_every_coin_of_the_file(data_dir) -> None:
    # 2024-03: the 1h file holds the 24 monitored coins and 110 others (data README).
    window = (datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 3, tzinfo=UTC))
    base = {"data": {"data_dir": str(data_dir)}}
    monitored = load_history(load_settings(**base), start=window[0], end=window[1])
    every = load_history(load_settings(**base, ml={"train_all_symbols": True}), start=window[0], end=window[1])
    assert set(monitored["symbol"].unique()) <= set(load_settings().data.symbols)  # WIF lists on 2024-03-05
    assert set(monitored["symbol"].unique()) < set(every["symbol"].unique())
    assert every["symbol"].n_unique() > 100
    # explicit symbols still win over the setting
    only = load_history(load_settings(**base, ml={"train_all_symbols": True}), ["ETH"], start=window[0], end=window[1])
    assert only["symbol"].unique().to_list() == ["ETH"]


def test_scorers_when_champion_trained_with_edge_features_then_scan_scores_equal_training_rows(
    bars: pl.DataFrame, tmp_path
) -> None:
    """A champion trained with edge + own-outcome features scores a live scan (MLScorer.observe_bars on the
    bars up to t) and a backtest (HistoricalContextScorer) with exactly the inputs training computed for
    those events, although the scoring process's settings have the features off (the model decides)."""
    import numpy as np

    from core.strategies.registry import signals_from_frame
    from models.context_scorer import HistoricalContextScorer
    from models.pipeline import train_strategy
    from models.scorer import MLScorer
    from models.tracking import CHAMPION, client, model_name

    store = {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db", "n_estimators": 30, "walk_forward_folds": 3}
    train_settings = load_settings(data={"var_dir": str(tmp_path)}, ml={**store, "edge_features": True, "outcome_features": True})
    scan_settings = load_settings(data={"var_dir": str(tmp_path)}, ml=store)  # edge features off here
    ev = build_events(bars, train_settings, ("swing",))["swing"]
    report = train_strategy(ev, bars, train_settings, log=True, backtest=False)
    assert report.model is not None and report.version
    client(train_settings).set_registered_model_alias(model_name("swing", train_settings), CHAMPION, report.version)
    edge = [*EDGE_CONTEXT_FEATURES, *OUTCOME_FEATURES]
    rows = detect_all(bars, scan_settings).filter(pl.col("strategy") == "swing")
    live, backtest = MLScorer(scan_settings, alias_check_seconds=3600), None
    for t in rows["ts"].unique().sort()[-3:]:
        signals = signals_from_frame(rows.filter(pl.col("ts") == t))
        ids = [s.signal_id for s in signals]
        frame = ev.events.join(pl.DataFrame({"signal_id": ids, "_o": range(len(ids))}), on="signal_id").sort("_o")
        assert frame.height == len(ids) and frame.select(edge).null_count().sum_horizontal()[0] < frame.height * len(edge)
        expected = report.model.predict(report.model.matrix(frame))["confidence"]
        # the scan: the bars up to t only
        live.observe_bars(bars.filter(pl.col("ts") <= t))
        got = [s.confidence for s in live.score(signals)]
        assert got == pytest.approx(expected.tolist(), abs=1e-6)
        # the backtest: each signal's context at its own bar, from the whole window
        backtest = backtest or HistoricalContextScorer(MLScorer(scan_settings), bars, scan_settings)
        assert [s.confidence for s in backtest.score(signals)] == pytest.approx(expected.tolist(), abs=1e-6)
        # and the edge inputs matter: without them the model says something else
        blind = report.model.matrix(frame.with_columns(pl.lit(None, pl.Float64).alias(f) for f in edge))
        assert not np.allclose(report.model.predict(blind)["confidence"], expected, atol=1e-6)
