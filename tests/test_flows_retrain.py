"""weekly-retrain as a real flow run on a small real slice (3 coins, 2020-05 .. 2021-01 1h bars) with an
MLflow store in tmp: challengers registered, the first becomes champion, metric artifacts published.
And the historical-context scorer the backtest task uses: a signal's context comes from its own bar."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from core.settings import load_settings
from tests.prefect_support import artifacts

SYMBOLS = ["BTC", "ETH", "SOL"]


def test_weekly_retrain_when_small_real_history_then_challengers_registered_and_promoted(
    prefect_harness: str, tmp_path: Path
) -> None:
    from flows.weekly_retrain import weekly_retrain
    from tasks.runtime import open_runtime

    settings = load_settings(data={"var_dir": tmp_path, "symbols": SYMBOLS}, ml={"n_estimators": 30})
    rt = open_runtime(settings)
    state = weekly_retrain(end=datetime(2021, 1, 1, tzinfo=UTC), runtime=rt, return_state=True)
    out = state.result()
    assert state.is_completed()
    assert out["challengers"], f"no strategy had enough labelled events: {out['metrics']}"
    promoted = {p["strategy"]: p for p in out["promotions"]}
    assert set(promoted) == set(out["challengers"])
    assert all(p["promoted"] and p["champion"] == out["challengers"][s] for s, p in promoted.items())
    assert {"retrain-metrics", "model-promotion"} <= {a.key for a in artifacts(state.state_details.flow_run_id)}
    rt.close()


class _Echo:
    def score(self, signals):  # noqa: ANN001, ANN201
        return signals


def test_historical_context_scorer_when_future_bars_removed_then_context_unchanged(real_candles) -> None:
    from core.domain import OrderType, Signal, StrategyName, TradePlan
    from models.context_scorer import HistoricalContextScorer

    settings = load_settings(data={"symbols": SYMBOLS})
    bars = real_candles("1h", SYMBOLS, datetime(2021, 1, 1, tzinfo=UTC), datetime(2021, 4, 1, tzinfo=UTC))
    ts = datetime(2021, 3, 1, 12, tzinfo=UTC)
    plan = TradePlan(entry_type=OrderType.MARKET, entry_prices=(1.0,), take_profit_pct=0.1, stop_loss_pct=0.05,
                     max_hold=timedelta(hours=72))
    sig = Signal(symbol="ETH", strategy=StrategyName.SWING, timeframe="1h", ts=ts, price=1.0, plan=plan)
    full = HistoricalContextScorer(_Echo(), bars, settings).score([sig])[0].features
    cut = HistoricalContextScorer(_Echo(), bars.filter(pl.col("ts") <= ts), settings).score([sig])[0].features
    assert full.keys() == cut.keys() and full
    assert all((math.isnan(full[k]) and math.isnan(cut[k])) or abs(full[k] - cut[k]) < 1e-12 for k in full)
