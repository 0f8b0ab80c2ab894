"""Market regime / circuit breaker (SPEC 4), vectorised over history.

From BTC's returns and the breadth of the monitored coins, each bar gets one regime, by priority
PANIC > CAUTION > EUPHORIA > NORMAL (the most defensive condition that holds wins):

- PANIC: BTC 1h return <= -3%, or BTC 4h <= -5%, or >= 70% of coins down more than 5% over 4h.
- CAUTION: BTC 24h <= -5%, or BTC realised vol > 2x its 30-day median.
- EUPHORIA: BTC 24h >= +8%, or >= 70% of coins up more than 10% over 24h.

Returns are exact in time: close(t) / close(t - window) - 1, and null when the bar at t - window is
missing (a gap never becomes a fake return). A null input never triggers a condition.
The manager applies the effects (`regime_effects`); this module only classifies.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl
from polars.expr.whenthen import ChainedThen, Then

from core import indicators as ind
from core.domain import Regime, bars_in, timeframe_duration
from core.errors import DataQualityError
from core.settings import RegimeSettings, Settings
from core.strategies.base import SEGMENT, bars_timeframe, validate_bars, with_segments

BENCHMARK = "BTC"
# Breadth over fewer coins than this is noise (one coin would be 100%): it is null and never triggers.
MIN_BREADTH_COINS = 5
VOL_WINDOW = timedelta(hours=24)  # realised-vol window for the CAUTION vol test

REGIME_COLUMNS = ("ts", "regime", "reason", "btc_ret_1h", "btc_ret_4h", "btc_ret_24h",
                  "breadth_down_4h", "breadth_up_24h", "vol_ratio")


@dataclass(frozen=True)
class RegimeEffects:
    allow_entries: bool
    allow_swing: bool
    size_factor: float
    threshold_add: float


def regime_effects(regime: Regime, settings: Settings) -> RegimeEffects:
    r = settings.risk.regime
    match regime:
        case Regime.PANIC:
            return RegimeEffects(allow_entries=False, allow_swing=False, size_factor=0.0, threshold_add=0.0)
        case Regime.CAUTION:
            return RegimeEffects(True, True, r.caution_size_factor, r.caution_threshold_add)
        case Regime.EUPHORIA:
            return RegimeEffects(allow_entries=True, allow_swing=False, size_factor=1.0, threshold_add=0.0)
        case _:
            return RegimeEffects(allow_entries=True, allow_swing=True, size_factor=1.0, threshold_add=0.0)


def _with_past_returns(bars: pl.DataFrame, windows: dict[str, timedelta]) -> pl.DataFrame:
    """Add ret_<name> = close / close exactly `window` earlier - 1 (null if that bar is missing)."""
    out = bars
    for name, window in windows.items():
        past = bars.select("symbol", (pl.col("ts") + window).alias("ts"), pl.col("close").alias("_past"))
        out = out.join(past, on=["symbol", "ts"], how="left", maintain_order="left").with_columns(
            (pl.col("close") / pl.col("_past") - 1).alias(f"ret_{name}")
        ).drop("_past")
    return out


def _pct(col: str) -> pl.Expr:
    return (pl.col(col) * 100).round(2).cast(pl.Utf8)


def _ret_rule(col: str, label: str, op: str, threshold: float) -> tuple[pl.Expr, pl.Expr]:
    """(condition, reason) for 'return <= / >= threshold', e.g. 'BTC 1h -3.14% <= -3%'."""
    cond = pl.col(col) <= threshold if op == "<=" else pl.col(col) >= threshold
    return cond, pl.format(f"{label} {{}}% {op} {threshold * 100:g}%", _pct(col))


def _breadth_rule(col: str, share: float, what: str) -> tuple[pl.Expr, pl.Expr]:
    return pl.col(col) >= share, pl.format(f"{{}}% of coins {what}", _pct(col))


def _conditions(r: RegimeSettings) -> dict[Regime, list[tuple[pl.Expr, pl.Expr]]]:
    """Per regime, its (condition, reason text) pairs, in SPEC 4's words."""
    vol_text = f"BTC realised vol {{}}x its {r.caution_vol_median_days}d median > {r.caution_vol_ratio:g}x"
    return {
        Regime.PANIC: [
            _ret_rule("btc_ret_1h", "BTC 1h", "<=", r.panic_btc_1h),
            _ret_rule("btc_ret_4h", "BTC 4h", "<=", r.panic_btc_4h),
            _breadth_rule("breadth_down_4h", r.panic_breadth_share, f"down > {-r.panic_breadth_drop_4h * 100:g}% in 4h"),
        ],
        Regime.CAUTION: [
            _ret_rule("btc_ret_24h", "BTC 24h", "<=", r.caution_btc_24h),
            (pl.col("vol_ratio") > r.caution_vol_ratio, pl.format(vol_text, pl.col("vol_ratio").round(2).cast(pl.Utf8))),
        ],
        Regime.EUPHORIA: [
            _ret_rule("btc_ret_24h", "BTC 24h", ">=", r.euphoria_btc_24h),
            _breadth_rule("breadth_up_24h", r.euphoria_breadth_share, f"up > {r.euphoria_breadth_rise_24h * 100:g}% in 24h"),
        ],
    }


def regime_frame(
    bars: pl.DataFrame, settings: Settings, *, min_breadth_coins: int = MIN_BREADTH_COINS, validated: bool = False
) -> pl.DataFrame:
    """One row per BTC bar: regime, the reasons that hold for it, and the inputs. `validated`: the caller
    already ran validate_bars on these bars (the backtest engine, on the bars it detects on)."""
    tf = bars_timeframe(bars) if validated else validate_bars(bars)
    if bars.filter(pl.col("symbol") == BENCHMARK).height == 0:
        raise DataQualityError(f"regime needs {BENCHMARK} bars in the frame; load {BENCHMARK} with the scan window")
    r: RegimeSettings = settings.risk.regime
    monitored = bars.filter(pl.col("symbol").is_in(list(settings.data.symbols)) | (pl.col("symbol") == BENCHMARK))
    rets = _with_past_returns(
        monitored.select("symbol", "ts", "close"),
        {"1h": timedelta(hours=1), "4h": timedelta(hours=4), "24h": timedelta(hours=24)},
    )
    breadth = rets.group_by("ts").agg(
        pl.when(pl.col("ret_4h").count() >= min_breadth_coins)
        .then((pl.col("ret_4h") < r.panic_breadth_drop_4h).sum() / pl.col("ret_4h").count())
        .alias("breadth_down_4h"),
        pl.when(pl.col("ret_24h").count() >= min_breadth_coins)
        .then((pl.col("ret_24h") > r.euphoria_breadth_rise_24h).sum() / pl.col("ret_24h").count())
        .alias("breadth_up_24h"),
    )
    bar = timeframe_duration(tf)
    vol_bars = bars_in(VOL_WINDOW, tf)
    median_window = timedelta(days=r.caution_vol_median_days)
    btc = with_segments(bars.filter(pl.col("symbol") == BENCHMARK), settings.strategy.max_bridged_gap)
    btc = (
        btc.with_columns(ind.realised_volatility(vol_bars, bar).over(SEGMENT).alias("_vol"))
        .with_columns(
            # median of the vol over the last 30 days, this bar included; needs a quarter of them.
            pl.col("_vol")
            .rolling_median_by("ts", window_size=f"{int(median_window.total_seconds())}s",
                               min_samples=max(1, bars_in(median_window, tf) // 4))
            .alias("_vol_median")
        )
        .with_columns((pl.col("_vol") / pl.col("_vol_median")).alias("vol_ratio"))
        .select("ts", "vol_ratio")
    )
    btc_rets = rets.filter(pl.col("symbol") == BENCHMARK).select(
        "ts", *(pl.col(f"ret_{w}").alias(f"btc_ret_{w}") for w in ("1h", "4h", "24h"))
    )
    frame = btc.join(btc_rets, on="ts", how="left", maintain_order="left").join(
        breadth, on="ts", how="left", maintain_order="left"
    )
    conds = _conditions(r)
    hit = {g: pl.any_horizontal([c.fill_null(False) for c, _ in cs]) for g, cs in conds.items()}
    why = {g: pl.concat_str([pl.when(c.fill_null(False)).then(t) for c, t in cs], separator="; ", ignore_nulls=True)
           for g, cs in conds.items()}
    regime: Then | ChainedThen = pl.when(hit[Regime.PANIC]).then(pl.lit(Regime.PANIC.value))
    reason: Then | ChainedThen = pl.when(hit[Regime.PANIC]).then(why[Regime.PANIC])
    for g in (Regime.CAUTION, Regime.EUPHORIA):
        regime = regime.when(hit[g]).then(pl.lit(g.value))
        reason = reason.when(hit[g]).then(why[g])
    return frame.with_columns(
        regime.otherwise(pl.lit(Regime.NORMAL.value)).alias("regime"),
        reason.otherwise(pl.lit("no breaker condition holds")).alias("reason"),
    ).select(REGIME_COLUMNS)


def regime_at(frame: pl.DataFrame, ts: datetime) -> tuple[Regime, str]:
    """The regime of the last row at or before ts. With no such row: NORMAL, and the reason says so."""
    row = frame.filter(pl.col("ts") <= ts).sort("ts").tail(1)
    if row.height == 0:
        return Regime.NORMAL, f"no regime data at or before {ts.isoformat()}"
    return Regime(row.item(0, "regime")), str(row.item(0, "reason"))
