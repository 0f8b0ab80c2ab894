"""Decision rule evidence: SPEC thresholds vs net EV on walk-forward out-of-sample predictions.

Every 1h event of the 24 monitored coins' shipped history is labelled, then models.evaluate.walk_forward
(purged, embargoed, expanding) predicts each test event with a model that never saw it. Both rules of
core.decision_rule are applied to those predictions (models.decision_eval.compare_rules); per strategy
and rule: trades taken, win rate, mean net return of the taken trades, share of test-span quarters with
a trade. "all" is the unfiltered rule-only baseline. No targets: this is evidence, reported both ways
(docs/ml.md "Decision rule"). Run: `.venv/bin/python -m bench decision_rule`.
"""

from __future__ import annotations

from bench.common import BenchResult
from core.settings import load_settings


def run() -> list[BenchResult]:
    from models.dataset import STRATEGIES, build_events, load_history
    from models.decision_eval import compare_rules
    from models.evaluate import walk_forward

    settings = load_settings()
    bars = load_history(settings)
    events = build_events(bars, settings)
    results: list[BenchResult] = []
    for s in STRATEGIES:
        ev = events[s]
        wf = walk_forward(ev.trainable, s, ev.feature_names, settings)
        if wf.predictions.is_empty():
            continue
        for rule, m in compare_rules(wf.predictions, s, settings).items():
            for k, v in m.items():
                results.append(BenchResult(f"rule_{s}_{rule}_{k}", float(v), "", ""))
    return results
