"""Features with a chance of edge (issue 12), all computed from data known at the signal bar.

Two kinds:
- edge_context_features(bars): per (symbol, ts) of one timeframe, from bars with ts <= t only --
  cross-sectional percentile ranks across the symbols trading at t (24h return, 24h quote volume, 24h
  realised volatility), the coin's own 24h volatility as a percentile of its past 30 days, BTC's trend
  state (close vs its 7d and 30d means) and volatility percentile, and the hour of day / day of week.
  models.features.coin_features joins them (they are per (symbol, ts) like the coin traits), so
  training, the backtest context and MLScorer.observe_bars all get them from the same bars.
- outcome_features(events, outcomes): the strategy's own recent realised results, per strategy and per
  (strategy, coin): win rate and mean net return of the last N trades whose label SETTLED strictly before
  the signal bar (settle time = exit_ts of the label simulation, so an outcome decided by later bars is
  never used). This is SPEC 5's "learn from every trade" made a feature. Opt-in (settings.ml.outcome_features);
  the scorers compute them for a champion that takes them (models.scorer.OwnOutcomes: the strategy's
  detection events on the scan's or backtest's bars, labelled as in training).

Every rolling window is time-based and right-closed; returns are taken only across consecutive bars, so
a data hole is never bridged.
"""

from __future__ import annotations

import math
from datetime import timedelta

import polars as pl

from core.domain import timeframe_duration

BENCHMARK = "BTC"
EDGE_CONTEXT_FEATURES: tuple[str, ...] = (
    "xs_rank_ret_24h", "xs_rank_quote_volume_24h", "xs_rank_vol_24h", "coin_vol_pctile_30d",
    "mkt_btc_trend_7d", "mkt_btc_trend_30d", "mkt_btc_trend_state", "mkt_btc_vol_pctile_30d",
    "cal_hour", "cal_dow",
)  # fmt: skip
OUTCOME_FEATURES: tuple[str, ...] = (
    "own_strategy_win_rate", "own_strategy_mean_return", "own_coin_win_rate", "own_coin_mean_return",
)  # fmt: skip
STRATEGY_WINDOW = 20  # last N settled trades of the strategy
COIN_WINDOW = 10  # last N settled trades of the strategy on this coin
MIN_SETTLED = 5  # fewer settled trades than this: null (missing to xgboost), not a noisy rate


def _bar_log_return(timeframe: str) -> pl.Expr:
    """Log return of one bar, null across a hole (previous bar not exactly one bar earlier)."""
    consecutive = pl.col("ts").diff().over("symbol") == timeframe_duration(timeframe)
    return pl.when(consecutive).then(pl.col("close").log().diff().over("symbol"))


def _pctile_by_ts(column: str) -> pl.Expr:
    """Percentile rank (0..1] of the column among the symbols with a value at the same ts."""
    return pl.col(column).rank("average").over("ts") / pl.col(column).count().over("ts")


def _rolling_pctile(column: str, window: str) -> pl.Expr:
    """Percentile rank (0..1] of the current value within the symbol's own values in (t - window, t]."""
    present = pl.col(column).is_not_null().cast(pl.Float64)
    count = present.rolling_sum_by("ts", window).over("symbol")
    rank = pl.col(column).rolling_rank_by("ts", window, min_samples=1).over("symbol")
    return pl.when(pl.col(column).is_not_null() & (count >= 24)).then(rank / count)


def edge_context_features(bars: pl.DataFrame, timeframe: str) -> pl.DataFrame:
    """Per (symbol, ts): EDGE_CONTEXT_FEATURES (BTC's columns are null when BTC is not in the frame)."""
    day_bars = max(2, int(timedelta(days=1) / timeframe_duration(timeframe)))
    per_year = math.sqrt(timedelta(days=365) / timeframe_duration(timeframe))
    frame = (
        bars.select("symbol", "ts", "close", "volume")
        .sort("symbol", "ts")
        .with_columns(_r=_bar_log_return(timeframe), _qv=pl.col("close") * pl.col("volume"))
        .with_columns(_n_24h=pl.col("_r").is_not_null().cast(pl.Int32).rolling_sum_by("ts", "24h").over("symbol"))
        .with_columns(
            # with fewer than ~2/3 of a day of returns the 24h figures are not comparable across coins
            _ret_24h=pl.when(pl.col("_n_24h") >= day_bars * 2 // 3).then(pl.col("_r").rolling_sum_by("ts", "24h").over("symbol")),
            _qv_24h=pl.col("_qv").rolling_sum_by("ts", "24h").over("symbol"),
            _vol_24h=pl.col("_r").rolling_std_by("ts", "24h", min_samples=day_bars * 2 // 3).over("symbol") * per_year,
        )
        .with_columns(
            xs_rank_ret_24h=_pctile_by_ts("_ret_24h"),
            xs_rank_quote_volume_24h=_pctile_by_ts("_qv_24h"),
            xs_rank_vol_24h=_pctile_by_ts("_vol_24h"),
            coin_vol_pctile_30d=_rolling_pctile("_vol_24h", "30d"),
            cal_hour=pl.col("ts").dt.hour().cast(pl.Float64),
            cal_dow=pl.col("ts").dt.weekday().cast(pl.Float64),  # 1 = Monday .. 7 = Sunday
        )
    )
    btc = frame.filter(pl.col("symbol") == BENCHMARK).select(
        "ts",
        mkt_btc_trend_7d=pl.col("close") / pl.col("close").rolling_mean_by("ts", "7d") - 1.0,
        mkt_btc_trend_30d=pl.col("close") / pl.col("close").rolling_mean_by("ts", "30d") - 1.0,
        mkt_btc_vol_pctile_30d=pl.col("coin_vol_pctile_30d"),
    )
    # trend state: +1 above both means, -1 below both, 0 mixed
    btc = btc.with_columns(
        mkt_btc_trend_state=(pl.col("mkt_btc_trend_7d").sign() + pl.col("mkt_btc_trend_30d").sign()) / 2
    ).with_columns(pl.col("mkt_btc_trend_state").round(0))
    return frame.join(btc, on="ts", how="left").select(
        "symbol", "ts", *(pl.col(f).cast(pl.Float64) for f in EDGE_CONTEXT_FEATURES)
    )


def outcome_features(events: pl.DataFrame, outcomes: pl.DataFrame) -> pl.DataFrame:
    """Per event (symbol, ts, strategy; same row order): OUTCOME_FEATURES from `outcomes` settled before ts.

    `outcomes`: labelled events (strategy, symbol, ts, filled, exit_ts, net_return), e.g. the training events
    themselves or realised trades. Only filled ones with an exit count; an outcome settles at exit_ts and
    is used by events whose signal bar opens strictly after it.
    """
    settled = (
        outcomes.filter(pl.col("filled").fill_null(False) & pl.col("exit_ts").is_not_null() & pl.col("net_return").is_not_null())
        .select("strategy", "symbol", settle_ts=pl.col("exit_ts").cast(events.schema["ts"]), _ts=pl.col("ts"),
                _win=(pl.col("net_return") > 0).cast(pl.Float64), _ret=pl.col("net_return").cast(pl.Float64))
        # a total order (signal ts breaks ties), so which trades fall out of the last-N window is fixed
        .sort("settle_ts", "strategy", "symbol", "_ts", maintain_order=True)
    )  # fmt: skip
    left = events.select("symbol", "ts", "strategy").with_row_index("_row").sort("ts")
    out = left
    for keys, window, win_name, ret_name in (
        (["strategy"], STRATEGY_WINDOW, "own_strategy_win_rate", "own_strategy_mean_return"),
        (["strategy", "symbol"], COIN_WINDOW, "own_coin_win_rate", "own_coin_mean_return"),
    ):
        stream = (
            settled.with_columns(
                pl.col("_win").rolling_mean(window, min_samples=MIN_SETTLED).over(keys).alias(win_name),
                pl.col("_ret").rolling_mean(window, min_samples=MIN_SETTLED).over(keys).alias(ret_name),
            )
            # several outcomes settling on one bar: the last row holds the window over all of them
            .unique(subset=[*keys, "settle_ts"], keep="last", maintain_order=True)
            .select(*keys, "settle_ts", win_name, ret_name)
        )
        out = out.join_asof(
            stream, left_on="ts", right_on="settle_ts", by=keys, strategy="backward", allow_exact_matches=False,
            check_sortedness=False,  # both sides sorted on the key above
        ).drop("settle_ts")
    return out.sort("_row").select("symbol", "ts", "strategy", *(pl.col(f).cast(pl.Float64) for f in OUTCOME_FEATURES))
