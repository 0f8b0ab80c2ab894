"""ML benchmarks: training with walk-forward evaluation on all shipped 1h history; scoring 300 signals.

- ml_train_walkforward_all_history_s: detect + label (core.simulator) + context features + walk-forward
  (purged, embargoed) + final fit, all three strategies, the 24 monitored coins' whole 1h history;
  MLflow logging and the OOS backtest are timed separately (ml_oos_backtest_s, ml_mlflow_log_s).
- ml_score_300_signals_ms: MLScorer.score on 300 real signals (all three strategies, champions loaded),
  median of 20 calls.
The pooled walk-forward metrics are recorded too (no target): they go in docs/ml.md.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from datetime import UTC, datetime

import polars as pl

from bench.common import BenchResult
from core.settings import load_settings
from core.strategies.registry import detect_all, signals_from_frame


def _train_all_history() -> list[BenchResult]:
    from models.dataset import STRATEGIES, build_events, load_history
    from models.evaluate import walk_forward
    from models.oos import oos_backtest
    from models.train import fit_strategy_model

    settings = load_settings()
    bars = load_history(settings)
    t0 = time.perf_counter()
    events = build_events(bars, settings)
    t_events = time.perf_counter() - t0
    results: list[BenchResult] = []
    wfs = {}
    for s in STRATEGIES:
        ev = events[s]
        wfs[s] = walk_forward(ev.trainable, s, ev.feature_names, settings)
        fit_strategy_model(ev.trainable, s, ev.feature_names, settings)
    total = time.perf_counter() - t0
    results.append(BenchResult("ml_train_walkforward_all_history_s", total, "s", "<= 60"))
    results.append(BenchResult("ml_build_events_all_history_s", t_events, "s", ""))
    t1 = time.perf_counter()
    bts = {s: oos_backtest(bars, settings, s, wfs[s].predictions) for s in STRATEGIES}
    results.append(BenchResult("ml_oos_backtest_all_strategies_s", time.perf_counter() - t1, "s", ""))
    for s in STRATEGIES:
        p = wfs[s].pooled
        results.append(BenchResult(f"ml_{s}_events", float(events[s].trainable.height), "events", ""))
        for k in ("auc", "brier", "brier_base", "precision_at_threshold", "base_rate", "taken_share",
                  "mae_take_profit_pct", "mae_stop_loss_pct", "mae_size_multiplier", "mae_hold_hours"):
            if k in p:
                results.append(BenchResult(f"ml_{s}_oos_{k}", float(p[k]), "", ""))
        for side in ("ml", "rule", "bh"):  # bh: buy-and-hold BTC on the same window and capital
            for k in ("total_return", "sharpe", "max_drawdown", "trades"):
                v = bts[s].get(side, {}).get(k)
                if v is not None:
                    results.append(BenchResult(f"ml_{s}_bt_{side}_{k}", float(v), "", ""))
    return results


def _scoring() -> list[BenchResult]:
    from models.dataset import build_events, load_history
    from models.pipeline import train_strategy
    from models.promotion import promote
    from models.scorer import MLScorer

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data={"var_dir": tmp}, ml={"tracking_uri": f"sqlite:///{tmp}/mlflow.db"})
        bars = load_history(settings, start=datetime(2023, 1, 1, tzinfo=UTC), end=datetime(2024, 1, 1, tzinfo=UTC))
        events = build_events(bars, settings)
        t0 = time.perf_counter()
        for s, ev in events.items():
            train_strategy(ev, bars, settings, log=True, backtest=False)
            promote(s, settings)
        log_s = (time.perf_counter() - t0) / len(events)
        rows = detect_all(bars, settings)
        # 300 signals, every strategy represented (all of channel's, then the most recent of the others)
        picked = pl.concat([rows.filter(pl.col("strategy") == "channel").tail(60),
                            rows.filter(pl.col("strategy") == "dca").tail(120),
                            rows.filter(pl.col("strategy") == "swing").tail(120)]).head(300)
        signals = signals_from_frame(picked)
        scorer = MLScorer(settings)
        scorer.observe_bars(bars)
        scorer.score(signals)  # loads the champions once per process
        times = []
        for _ in range(20):
            t = time.perf_counter()
            out = scorer.score(signals)
            times.append((time.perf_counter() - t) * 1000)
        assert len(out) == len(signals) and not any(o.rule_only for o in out)
        return [
            BenchResult("ml_score_300_signals_ms", statistics.median(times), "ms", "<= 20"),
            BenchResult("ml_mlflow_train_log_register_per_strategy_1y_s", log_s, "s", ""),
        ]


def run() -> list[BenchResult]:
    return _scoring() + _train_all_history()
