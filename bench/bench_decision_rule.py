"""Decision rule evidence: SPEC thresholds vs net EV on walk-forward out-of-sample predictions.

Every 1h event of the 24 monitored coins' shipped history is labelled, then models.evaluate.walk_forward
(purged, embargoed, expanding) predicts each test event with a model that never saw it. Both rules of
core.decision_rule are applied to those predictions (models.decision_eval.compare_rules); per strategy
and rule: trades taken, win rate, mean net return of the taken trades, share of test-span quarters with
a trade. "all" is the unfiltered rule-only baseline. No targets: this is evidence, reported both ways
(docs/ml.md "Decision rule"). Run: `.venv/bin/python -m bench decision_rule`.
"""

from __future__ import annotations

from bench.common import BenchResult, walk_forward_by_strategy
from core.settings import load_settings


def run() -> list[BenchResult]:
    from models.decision_eval import compare_rules

    settings = load_settings()
    _, runs = walk_forward_by_strategy(settings)
    results: list[BenchResult] = []
    for s, wf in runs:
        for rule, m in compare_rules(wf.predictions, s, settings).items():
            for k, v in m.items():
                results.append(BenchResult(f"rule_{s}_{rule}_{k}", float(v), "", ""))
    return results
