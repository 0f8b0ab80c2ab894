"""Strategy engine speed on the full 1h history (134 symbols, ~1.4M bars): detect_all, each detector,
the regime frame, and a live-style scan of the 24 monitored coins over the warm-up window."""

from __future__ import annotations

import time
from collections.abc import Callable

import polars as pl

from bench.common import BenchResult
from core.domain import CANDLE_SCHEMA
from core.regime import regime_frame
from core.settings import load_settings
from core.strategies.registry import build_strategies, detect_all, scan_latest, warmup_bars


def _best_of(fn: Callable[[], object], repeat: int = 2) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run() -> list[BenchResult]:
    settings = load_settings()
    bars = (
        pl.scan_parquet(settings.data.data_dir / "ohlcv_1h.parquet")
        .with_columns(pl.lit("1h").alias("timeframe"))
        .select([pl.col(c).cast(t) for c, t in CANDLE_SCHEMA.items()])
        .collect()
    )
    n = bars.height
    results = [
        BenchResult(
            f"strategies.detect_all_1h_full_history_{n}_bars_s", _best_of(lambda: detect_all(bars, settings)), "s", "<= 10"
        )
    ]
    for name, st in build_strategies(settings).items():
        secs = _best_of(lambda st=st: st.detect(bars))
        results.append(BenchResult(f"strategies.detect_{name.value}_1h_full_history_s", secs, "s", "<= 5"))
    secs = _best_of(lambda: regime_frame(bars, settings))
    results.append(BenchResult("strategies.regime_frame_1h_full_history_s", secs, "s", "<= 5"))
    # a live scan: the 24 monitored coins, each over the warm-up window only
    window = warmup_bars(settings)
    live = bars.filter(pl.col("symbol").is_in(list(settings.data.symbols))).group_by("symbol", maintain_order=True).tail(window)
    ms = 1000 * _best_of(lambda: scan_latest(live, settings), 3)
    results.append(BenchResult(f"strategies.scan_latest_24_symbols_{window}_bars_ms", ms, "ms", "<= 1000"))
    return results
