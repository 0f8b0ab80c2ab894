"""Model inputs for a detection event: the strategy's own feature columns plus coin and market context.

Coin features let one model per strategy adapt per coin (SPEC 3: no model per coin); market features
(the circuit breaker's inputs from core.regime) describe the tape the signal fired in. Every value at
bar t is computed from bars with ts <= t only: rolling windows are time-based and right-closed, and
returns are only taken across consecutive bars so that a hole in the data (e.g. 2024-07-15 .. 2024-09-07)
is never bridged as if it were one bar.
"""

from __future__ import annotations

import math
from datetime import timedelta

import polars as pl

from core.domain import timeframe_duration
from core.errors import DataQualityError
from core.regime import regime_frame
from core.settings import Settings
from models.edge_features import EDGE_CONTEXT_FEATURES, edge_context_features

COIN_FEATURES: tuple[str, ...] = (
    "coin_vol_30d", "coin_liquidity_30d", "coin_vol_ratio_3d_30d", "coin_dist_support_72h", "coin_dist_resistance_72h",
)  # fmt: skip
# Market feature -> column of core.regime.regime_frame it comes from.
_REGIME_INPUTS: dict[str, str] = {
    "mkt_btc_ret_1h": "btc_ret_1h",
    "mkt_btc_ret_4h": "btc_ret_4h",
    "mkt_btc_ret_24h": "btc_ret_24h",
    "mkt_breadth_down_4h": "breadth_down_4h",
    "mkt_breadth_up_24h": "breadth_up_24h",
    "mkt_btc_vol_ratio": "vol_ratio",
}
_REGIME_CODE = {"NORMAL": 0.0, "CAUTION": 1.0, "EUPHORIA": 2.0, "PANIC": 3.0}
MARKET_FEATURES: tuple[str, ...] = (*_REGIME_INPUTS, "mkt_regime_code")
CONTEXT_FEATURES: tuple[str, ...] = COIN_FEATURES + MARKET_FEATURES

_WINDOW_30D = "30d"
# History a caller must pass (e.g. to MLScorer.observe_bars) for the context at its last bar to equal
# what training computed: the longest window (30 days) plus a day of slack.
CONTEXT_LOOKBACK = timedelta(days=31)
_WINDOW_3D = "3d"


def _bar_return(timeframe: str) -> pl.Expr:
    """Log return of one bar, null when the previous bar is not exactly one bar earlier (a data hole)."""
    step = timeframe_duration(timeframe)
    consecutive = pl.col("ts").diff().over("symbol") == step
    return pl.when(consecutive).then(pl.col("close").log().diff().over("symbol"))


def coin_features(bars: pl.DataFrame, timeframe: str) -> pl.DataFrame:
    """Per (symbol, ts): realised vol and log quote-volume liquidity over 30 days, 3d/30d vol ratio, 72h range.

    The strategies already report 24h versions (rvol_24h, liquidity_24h); these are the slow coin traits.
    """
    per_year = math.sqrt(timedelta(days=365) / timeframe_duration(timeframe))
    min_30d = max(2, int(timedelta(days=7) / timeframe_duration(timeframe)))  # a week of bars before trusting it
    frame = bars.select("symbol", "ts", "high", "low", "close", "volume").sort("symbol", "ts")
    return (
        frame.with_columns(_r=_bar_return(timeframe), _qv=pl.col("close") * pl.col("volume"))
        .with_columns(
            coin_vol_30d=pl.col("_r").rolling_std_by("ts", _WINDOW_30D, min_samples=min_30d).over("symbol") * per_year,
            _vol_3d=pl.col("_r").rolling_std_by("ts", _WINDOW_3D, min_samples=12).over("symbol") * per_year,
            coin_liquidity_30d=pl.col("_qv").rolling_mean_by("ts", _WINDOW_30D).over("symbol").log1p(),
            # distance to the 72h low/high: the "distance to support" of the seed's DCA inputs, for every strategy
            coin_dist_support_72h=pl.col("close") / pl.col("low").rolling_min_by("ts", "72h").over("symbol") - 1.0,
            coin_dist_resistance_72h=pl.col("high").rolling_max_by("ts", "72h").over("symbol") / pl.col("close") - 1.0,
        )
        .with_columns(coin_vol_ratio_3d_30d=pl.col("_vol_3d") / pl.col("coin_vol_30d"))
        .select("symbol", "ts", *COIN_FEATURES)
    )


def market_features(bars: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """Per ts: the circuit breaker's inputs and its regime (core.regime owns them), as numbers.

    Needs BTC in the frame; without it every market feature is null (missing to xgboost).
    """
    try:
        frame = regime_frame(bars, settings)
    except DataQualityError:
        return pl.DataFrame({"ts": bars["ts"].unique().sort()}).with_columns(
            pl.lit(None, pl.Float64).alias(f) for f in MARKET_FEATURES
        )
    return frame.select(
        "ts",
        *(pl.col(src).cast(pl.Float64).alias(dst) for dst, src in _REGIME_INPUTS.items()),
        mkt_regime_code=pl.col("regime").replace_strict(_REGIME_CODE, default=None, return_dtype=pl.Float64),
    )


def context_feature_names(settings: Settings) -> tuple[str, ...]:
    """CONTEXT_FEATURES, plus models.edge_features' context when settings.ml.edge_features is on (issue 12)."""
    return CONTEXT_FEATURES + (EDGE_CONTEXT_FEATURES if settings.ml.edge_features else ())


def context_features(bars: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """Per (symbol, ts) of a one-timeframe candle frame: context_feature_names (coin, market, then edge)."""
    timeframe = str(bars["timeframe"][0])
    frame = coin_features(bars, timeframe).join(market_features(bars, settings), on="ts", how="left")
    if settings.ml.edge_features:
        frame = frame.join(edge_context_features(bars, timeframe), on=["symbol", "ts"], how="left")
    return frame.select("symbol", "ts", *(pl.col(f).cast(pl.Float64) for f in context_feature_names(settings)))


def event_features(
    signal_rows: pl.DataFrame,
    bars: pl.DataFrame,
    feature_names: tuple[str, ...],
    settings: Settings,
    context: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Join each detection row's own feature struct with the coin/market context at its signal bar.

    Returns the id columns (symbol, timeframe, ts, strategy) plus `feature_names` + CONTEXT_FEATURES as
    Float64 (missing values are null; xgboost treats them as missing). `context` (context_features of the
    same bars) can be passed when it was already computed.
    """
    ids: dict[str, pl.DataType | type[pl.DataType]] = {
        "symbol": pl.Utf8, "timeframe": pl.Utf8, "ts": bars.schema["ts"], "strategy": pl.Utf8
    }
    if signal_rows.is_empty():
        return pl.DataFrame(schema={**ids, **{f: pl.Float64 for f in (*feature_names, *context_feature_names(settings))}})
    own = signal_rows.select(*ids, "features").unnest("features")
    missing = [f for f in feature_names if f not in own.columns]
    if missing:
        raise ValueError(f"signal rows lack strategy features {missing}; detect_all must emit them in `features`")
    if context is None:
        timeframe = signal_rows["timeframe"][0]
        context = context_features(bars.filter(pl.col("timeframe") == timeframe), settings)
    out = own.with_columns(pl.col("ts").cast(bars.schema["ts"])).join(context, on=["symbol", "ts"], how="left")
    return out.select(*ids, *(pl.col(f).cast(pl.Float64) for f in (*feature_names, *context_feature_names(settings))))
