"""How sure we are: 95% block-bootstrap intervals of the pooled walk-forward AUC and Brier, and of the OOS
Sharpe (daily equity returns) of ML-filtered trading under both decision rules and of rule-only trading,
with the Deflated Sharpe Ratio given the configurations tried.

Per strategy, on all 24 monitored coins' 1h history: models.evaluate.walk_forward (default inputs), then
models.oos.oos_backtest on the walk-forward test window (the engine, same bars and capital).
n_trials counts the configurations compared for issue 12 on these predictions: 2 decision rules x 3
input sets (bench_edge_features) = 6. No targets: these are the intervals the README headline quotes.
Run: `.venv/bin/python -m bench uncertainty`.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from bench.common import BenchResult, walk_forward_by_strategy
from core.settings import load_settings

N_TRIALS = 6


def _daily_returns(equity: pl.DataFrame) -> np.ndarray:
    daily = equity.sort("ts").group_by_dynamic("ts", every="1d").agg(pl.col("equity").last())
    return daily["equity"].pct_change().drop_nulls().to_numpy()


def run() -> list[BenchResult]:
    from models.oos import oos_backtest
    from models.uncertainty import auc_interval, brier_interval, deflated_sharpe_from_returns, sharpe_interval

    settings = load_settings()
    bars, runs = walk_forward_by_strategy(settings)
    out: list[BenchResult] = []
    for s, wf in runs:
        y = wf.predictions["success"].to_numpy()
        p = wf.predictions["pred_confidence"].to_numpy()
        for name, iv in (("auc", auc_interval(y, p, n_boot=500)), ("brier", brier_interval(y, p, n_boot=500))):
            parts = (("", iv.point), ("_low", iv.low), ("_high", iv.high))
            out += [BenchResult(f"ci_{s}_oos_{name}{k}", v, "", "") for k, v in parts]
        out.append(BenchResult(f"ci_{s}_oos_brier_base", float(wf.pooled["brier_base"]), "", ""))
        for rule in ("ev", "threshold"):
            bt = oos_backtest(bars, load_settings(ml={"decision_rule": rule}), s, wf.predictions)
            sides = {f"ml_{rule}": "ml", **({"rule_only": "rule", "bh_btc": "bh"} if rule == "ev" else {})}
            for label, key in sides.items():
                r = _daily_returns(bt[f"{key}_equity"])
                if r.size < 3 or not np.isfinite(r).all() or r.std() == 0:
                    out.append(BenchResult(f"ci_{s}_{label}_trades", float(bt[key].get("trades", 0.0)), "", ""))
                    continue
                iv = sharpe_interval(r, 365, n_boot=500)
                out += [
                    BenchResult(f"ci_{s}_{label}_sharpe", iv.point, "", ""),
                    BenchResult(f"ci_{s}_{label}_sharpe_low", iv.low, "", ""),
                    BenchResult(f"ci_{s}_{label}_sharpe_high", iv.high, "", ""),
                    BenchResult(f"ci_{s}_{label}_dsr", deflated_sharpe_from_returns(r, N_TRIALS), "", ""),
                    BenchResult(f"ci_{s}_{label}_total_return", float(bt[key]["total_return"]), "", ""),
                    BenchResult(f"ci_{s}_{label}_trades", float(bt[key].get("trades", 0.0)), "", ""),
                ]
    return out
