"""More events evidence: pooled walk-forward AUC and Brier per strategy, trained on the 24 monitored coins
vs on every coin of the 1h file (ml.train_all_symbols; the 110 other coins cover 2024-01-01..2024-07-14
only). AUC is also reported on the monitored coins' test events alone, the ones that are traded.
Caveat: with every coin in the frame, the market breadth features are taken over that wider universe.
Run: `.venv/bin/python -m bench more_events`.
"""

from __future__ import annotations

import polars as pl

from bench.common import BenchResult
from core.settings import load_settings


def run() -> list[BenchResult]:
    from models.dataset import STRATEGIES, build_events, load_history
    from models.evaluate import walk_forward
    from models.uncertainty import auc

    out: list[BenchResult] = []
    monitored = list(load_settings().data.symbols)
    for label, settings in (("monitored", load_settings()), ("all", load_settings(ml={"train_all_symbols": True}))):
        bars = load_history(settings)
        events = build_events(bars, settings)
        for s in STRATEGIES:
            ev = events[s]
            wf = walk_forward(ev.trainable, s, ev.feature_names, settings)
            if wf.predictions.is_empty():
                continue
            mine = wf.predictions.filter(pl.col("symbol").is_in(monitored))
            out += [
                BenchResult(f"more_events_{s}_{label}_events", float(ev.trainable.height), "events", ""),
                BenchResult(f"more_events_{s}_{label}_auc", float(wf.pooled["auc"]), "", ""),
                BenchResult(f"more_events_{s}_{label}_brier", float(wf.pooled["brier"]), "", ""),
                BenchResult(f"more_events_{s}_{label}_brier_base", float(wf.pooled["brier_base"]), "", ""),
                BenchResult(f"more_events_{s}_{label}_auc_monitored_test",
                            auc(mine["success"].to_numpy(), mine["pred_confidence"].to_numpy()), "", ""),
            ]  # fmt: skip
    return out
