"""The evidence report (issue 12): edge or no edge per strategy and for the combined book.

models.evidence.evidence_report on all 24 monitored coins' shipped 1h history with the default settings:
walk-forward (4 expanding folds, purged, embargoed), then the engine's ML-filtered and rule-only books and
BTC at the same exposure on each strategy's test window; 95% block-bootstrap intervals (1,000 resamples),
the Deflated Sharpe with the configurations compared. Writes var/reports/evidence/evidence.{md,json}
(the README headline). Same as `mlcrypto evidence`. No targets except the wall time being recorded.
Run: `.venv/bin/python -m bench evidence`.
"""

from __future__ import annotations

import math
from pathlib import Path

from bench.common import BenchResult
from core.settings import load_settings


def run() -> list[BenchResult]:
    from models.dataset import load_history
    from models.evidence import EDGE, evidence_report, write_report

    settings = load_settings()
    report = evidence_report(load_history(settings), settings)
    write_report(report, Path(settings.data.var_dir) / "reports" / "evidence")
    out = [BenchResult("evidence.full_run_s", report.seconds, "s", "")]
    for r in report.rows:
        figures = {
            "auc_ci_low": r.auc.low,
            "ml_sharpe_ci_low": r.books["ml"].sharpe.low,
            "rule_sharpe": r.books["rule"].sharpe.point,
            "btc_ml_exposure_sharpe": r.books["btc_ml_exposure"].sharpe.point,
            "edge": float(r.verdict == EDGE),
        }
        out += [BenchResult(f"evidence.{r.strategy}.{k}", v, "", "") for k, v in figures.items() if math.isfinite(v)]
    return out
