"""Nested walk-forward tuning evidence (models.tuning): does searching xgboost's size and step beat the
settings' defaults on outer folds the search never saw? Swing (the strategy with the most events and the
only AUC interval above 0.5), 24 monitored coins' 1h history, 8 trials per search, 3 outer x 2 inner folds.
Reports the outer-fold mean AUC/Brier tuned vs untuned and the configurations tried (for the DSR).
Run: `.venv/bin/python -m bench tuning` (several minutes on 2 cores).
"""

from __future__ import annotations

from bench.common import BenchResult
from core.settings import load_settings

STRATEGY, N_TRIALS, N_OUTER, N_INNER = "swing", 8, 3, 2


def run() -> list[BenchResult]:
    from models.dataset import build_events, load_history
    from models.tuning import nested_tune, untuned_outer_scores

    settings = load_settings(ml={"walk_forward_folds": N_OUTER})
    bars = load_history(settings)
    ev = build_events(bars, settings, (STRATEGY,))[STRATEGY]
    tuned = nested_tune(ev.trainable, STRATEGY, ev.feature_names, settings, N_TRIALS, N_OUTER, N_INNER)
    base = untuned_outer_scores(ev.trainable, STRATEGY, ev.feature_names, settings)
    m = tuned.metrics_to_log()
    out = [
        BenchResult(f"tuning_{STRATEGY}_outer_auc_tuned", m.get("tuning_outer_auc_mean", float("nan")), "", ""),
        BenchResult(f"tuning_{STRATEGY}_outer_auc_untuned", base["auc_mean"], "", ""),
        BenchResult(f"tuning_{STRATEGY}_outer_brier_tuned", m.get("tuning_outer_brier_mean", float("nan")), "", ""),
        BenchResult(f"tuning_{STRATEGY}_outer_brier_untuned", base["brier_mean"], "", ""),
        BenchResult(f"tuning_{STRATEGY}_n_trials", float(tuned.n_trials), "trials", ""),
    ]
    out += [BenchResult(f"tuning_{STRATEGY}_best_{k}", float(v), "", "") for k, v in tuned.best_params.items()]
    return out
