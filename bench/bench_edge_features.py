"""Edge features evidence: pooled walk-forward AUC and Brier per strategy with and without them.

Same events (24 monitored coins, all shipped 1h history), same purged walk-forward; only the model inputs
differ: "base" = the strategy's own features + the coin/market context before issue 12, "edge" = base +
models.edge_features.EDGE_CONTEXT_FEATURES (ml.edge_features), "edge_own" = edge + the strategy's
own settled outcomes (ml.outcome_features). Brier is reported next to the base-rate Brier. No targets
here: issue 12's targets (AUC >= 0.56 DCA/Swing, > 0.5 Channel) are read off these rows.
Run: `.venv/bin/python -m bench edge_features`.
"""

from __future__ import annotations

from bench.common import BenchResult
from core.settings import load_settings


def run() -> list[BenchResult]:
    from models.dataset import STRATEGIES, build_events, load_history
    from models.edge_features import EDGE_CONTEXT_FEATURES, OUTCOME_FEATURES
    from models.evaluate import walk_forward

    settings = load_settings(ml={"edge_features": True, "outcome_features": True})
    bars = load_history(settings)
    events = build_events(bars, settings)
    results: list[BenchResult] = []
    for s in STRATEGIES:
        ev = events[s]
        own = [f for f in ev.feature_names if f not in OUTCOME_FEATURES]
        variants = {
            "base": [f for f in own if f not in EDGE_CONTEXT_FEATURES],
            "edge": own,
            "edge_own": ev.feature_names,
        }
        for name, feats in variants.items():
            pooled = walk_forward(ev.trainable, s, feats, settings).pooled
            for k in ("auc", "brier", "brier_base", "n"):
                if k in pooled:
                    results.append(BenchResult(f"features_{s}_{name}_{k}", float(pooled[k]), "", ""))
    return results
