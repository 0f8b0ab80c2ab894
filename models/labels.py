"""Labels for detection events: the outcome of trading each one, from THE simulator (core.simulator).

Only this module looks past the signal bar, and only to label. Per event (see docs/ml.md):
- success      = the trade filled and its net return (after fees) was > 0;
- tp_target    = 0.8 x max favourable excursion, clipped to 3-15%  (a TP the path would have reached);
- sl_target    = 1.1 x max adverse excursion, clipped to 5-12%      (a stop just beyond the path's worst dip);
- size_target  = 1 + 0.5 tanh(net_return / plan SL), in 0.5-1.5    (risk-adjusted return, R-multiple);
- hold_target_h = hours from entry to the highest high within the max hold, clipped 12-72h;
- label_end    = signal ts + entry expiry + max hold: the last bar that can decide the label (for purging).
Unfilled events (a DCA grid whose levels all expired) have no outcome and are dropped from training.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from core.domain import timeframe_duration
from core.settings import Settings

LABEL_COLUMNS: tuple[str, ...] = (
    "filled", "net_return", "exit_reason", "success", "tp_target", "sl_target", "size_target", "hold_target_h",
    "label_end",
)  # fmt: skip


def simulate_events(signal_rows: pl.DataFrame, bars: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """signal_rows + signal_id + the simulator's outcome columns, one row per signal row, same order."""
    from core.simulator import simulate_many  # the one trade simulator (SPEC 3: labels come from it)

    outcomes = simulate_many(signal_rows, bars, settings)
    if outcomes.height != signal_rows.height:
        raise ValueError(f"simulate_many returned {outcomes.height} outcomes for {signal_rows.height} signals")
    # simulate_many keeps the signal order; its key columns repeat ours and are dropped.
    extra = outcomes.drop(c for c in outcomes.columns if c in signal_rows.columns)
    return pl.concat([signal_rows, extra], how="horizontal")


def time_to_best_hours(events: pl.DataFrame, bars: pl.DataFrame, timeframe: str) -> pl.Series:
    """Hours from entry to the bar with the highest high within the max hold (null when not filled)."""
    step = timeframe_duration(timeframe)
    step_us = step // timedelta(microseconds=1)
    ev = events.select(
        pl.int_range(pl.len()).alias("_row"),
        "symbol",
        pl.col("entry_ts").cast(bars.schema["ts"]),
        n=(pl.col("max_hold_h") * (timedelta(hours=1) / step)).cast(pl.Int64).clip(1, None),
    )
    path = (
        ev.filter(pl.col("entry_ts").is_not_null())
        .with_columns(k=pl.int_ranges(0, pl.col("n") + 1))
        .explode("k")
        .with_columns(ts=pl.col("entry_ts") + pl.duration(microseconds=pl.col("k") * step_us))
        .join(bars.select("symbol", "ts", "high"), on=["symbol", "ts"], how="inner")
    )
    best = path.sort("_row", "k").group_by("_row").agg(best_k=pl.col("k").get(pl.col("high").arg_max()))
    hours = step / timedelta(hours=1)
    out = ev.select("_row").join(best, on="_row", how="left").sort("_row")
    return (out["best_k"].cast(pl.Float64) * hours).alias("time_to_best_h")


def label_events(signal_rows: pl.DataFrame, bars: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """Simulate every event and add the label/target columns (see module doc)."""
    simulated = simulate_events(signal_rows, bars, settings)
    return add_targets(simulated, bars)


def add_targets(simulated: pl.DataFrame, bars: pl.DataFrame) -> pl.DataFrame:
    """Targets from the simulator's outcome columns plus the path's time to best price."""
    if simulated.is_empty():
        return simulated.with_columns(
            success=pl.lit(None, pl.Int8), tp_target=pl.lit(None, pl.Float64), sl_target=pl.lit(None, pl.Float64),
            size_target=pl.lit(None, pl.Float64), hold_target_h=pl.lit(None, pl.Float64),
            label_end=pl.col("ts"),
        )  # fmt: skip
    timeframe = simulated["timeframe"][0]
    ctx = bars.filter(pl.col("timeframe") == timeframe) if "timeframe" in bars.columns else bars
    with_best = simulated.with_columns(time_to_best_hours(simulated, ctx, timeframe))
    filled = pl.col("filled").fill_null(False)
    return with_best.with_columns(
        success=(filled & (pl.col("net_return") > 0)).cast(pl.Int8),
        tp_target=pl.when(filled).then((0.8 * pl.col("max_favorable").abs()).clip(0.03, 0.15)),
        sl_target=pl.when(filled).then((1.1 * pl.col("max_adverse").abs()).clip(0.05, 0.12)),
        size_target=pl.when(filled).then(1.0 + 0.5 * (pl.col("net_return") / pl.col("sl_pct")).tanh()),
        hold_target_h=pl.when(filled).then(pl.col("time_to_best_h").clip(12.0, 72.0)),
        label_end=pl.col("ts")
        + pl.duration(minutes=((pl.col("expiry_h").fill_null(0.0) + pl.col("max_hold_h")) * 60).cast(pl.Int64)),
    ).drop("time_to_best_h")
