"""The learning loop on real parts: champions trained on real 2023 bars in a tmp MLflow store, a real paper
session (core.backtest.session + the paper ledger and venue) in a real DuckDB store scored by MLScorer,
then its closed trades read back as training rows, appended to a retrain, and the ML accuracy report."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from mlflow import MlflowClient

from core.backtest.session import paper_execution, run_session
from core.domain import ClosedTrade, Decision, ExitReason, StrategyName
from core.settings import Settings, load_settings
from core.storage.duckdb_store import DuckDBStore
from models.dataset import build_events, feature_names, load_history
from models.outcomes import ledger_trades, ml_accuracy, outcome_training_rows, read_outcomes
from models.pipeline import train_all, train_strategy
from models.promotion import promote
from models.scorer import MLScorer
from models.tracking import model_name

SYMBOLS = ["BTC", "ETH", "SOL", "DOGE", "LINK", "XRP"]
TRAIN = (datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))
PAPER = (datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 15, tzinfo=UTC))
STRATS = ("dca", "swing")


def _settings(tmp: Path, prefix: str = "lo") -> Settings:
    # Low thresholds (SPEC's threshold rule, not EV) so that a 6-week session takes model-scored trades of both strategies.
    return load_settings(
        data={"var_dir": str(tmp), "symbols": SYMBOLS},
        ml={"tracking_uri": f"sqlite:///{tmp}/mlflow.db", "registered_model_prefix": prefix, "experiment_prefix": prefix,
            "n_estimators": 30, "walk_forward_folds": 3, "decision_rule": "threshold"},
        strategy={"dca": {"min_confidence": 0.3}, "swing": {"min_confidence": 0.2}},
    )  # fmt: skip


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("loop")
    settings = _settings(tmp)
    history = load_history(settings, SYMBOLS, start=TRAIN[0], end=TRAIN[1])
    events = build_events(history, settings, STRATS)
    for s in STRATS:  # champions in the tmp MLflow store
        train_strategy(events[s], history, settings, log=True, backtest=False)
        assert promote(s, settings).promoted
    store = DuckDBStore(tmp / "store.duckdb")
    store.init_schema()
    store.upsert_candles(load_history(settings, SYMBOLS, start=PAPER[0] - timedelta(days=40), end=PAPER[1] + timedelta(days=10)))
    result, _ = run_session(store, settings, kind="paper", symbols=SYMBOLS, timeframe="1h", start=PAPER[0], end=PAPER[1],
                            exit_timeframe=None, execution=paper_execution(store, settings, reset=True), scorer=MLScorer(settings))  # fmt: skip
    outcomes = read_outcomes(store, settings)
    yield settings, store, history, events, result, outcomes
    store.close()


def test_read_outcomes_when_paper_session_then_one_row_per_closed_trade_with_entry_features_and_scores(session) -> None:
    settings, store, _, _, result, outcomes = session
    trades = {p["signal_id"]: p for _, p in store.get_records("trade")}
    decisions = {k: Decision.model_validate(p) for k, p in store.get_records("decision")}
    # one row per stored closed trade, all of them model-scored (both strategies have champions)
    assert outcomes.height == len(trades) == result.trades.height > 20
    assert set(outcomes["strategy"]) == set(STRATS)
    assert not outcomes["entry_rule_only"].any()
    for r in outcomes.iter_rows(named=True):
        t, d = trades[r["signal_id"]], decisions[r["signal_id"]]
        assert r["success"] == int(t["net_pnl"] > 0)
        assert r["net_return"] == pytest.approx(t["net_pnl"] / (t["entry_price"] * t["quantity"]))
        assert r["entry_confidence"] == d.scores.confidence and r["entry_model_version"] == d.scores.model_version
        for f in feature_names(r["strategy"])[:4]:  # the detector's own features, as stored at entry
            assert r[f] == pytest.approx(d.features[f])
        assert r["coin_vol_30d"] is not None and r["mkt_btc_ret_24h"] is not None  # context from the stored bars
        assert r["ts"] < r["entry_ts"] < r["exit_ts"] <= r["label_end"] + timedelta(hours=1)


def test_read_outcomes_when_trade_realised_then_targets_from_its_path_on_stored_bars(session) -> None:
    settings, store, _, _, _, outcomes = session
    bars = store.read_many(SYMBOLS, "1h", PAPER[0], PAPER[1] + timedelta(days=10))
    assert outcomes["replay_matches"].all()  # the simulator's replay on the stored bars exits where the ledger did
    for r in outcomes.iter_rows(named=True):
        held = bars.filter((pl.col("symbol") == r["symbol"]) & (pl.col("ts") >= r["entry_ts"]) & (pl.col("ts") < r["exit_ts"]))
        mfe = max(held["high"]) / r["entry_price"] - 1
        mae = min(held["low"]) / r["entry_price"] - 1
        assert r["tp_target"] == pytest.approx(min(max(0.8 * mfe, 0.03), 0.15))
        assert r["sl_target"] == pytest.approx(min(max(1.1 * abs(mae), 0.05), 0.12))
        window = bars.filter((pl.col("symbol") == r["symbol"]) & (pl.col("ts") >= r["entry_ts"])
                             & (pl.col("ts") <= r["entry_ts"] + timedelta(hours=r["max_hold_h"]))).sort("ts")  # fmt: skip
        best = window.row(int(window["high"].arg_max()), named=True)["ts"]
        assert r["hold_target_h"] == pytest.approx(min(max((best - r["entry_ts"]) / timedelta(hours=1), 12.0), 72.0))


def test_outcome_rows_when_history_covers_the_session_then_deduplicated(session) -> None:
    settings, _, _, events, _, outcomes = session
    # history ending before the session: every outcome is new
    for s in STRATS:
        fresh = outcome_training_rows(outcomes, events[s])
        assert fresh.duplicates == 0 and fresh.rows.height == fresh.trades == outcomes.filter(pl.col("strategy") == s).height
        assert set(feature_names(s)) | {"success", "tp_target", "sl_target", "label_end", "ts", "source"} <= set(fresh.rows.columns)
    # history covering the session: the same (strategy, symbol, ts) events are already labelled
    covering = load_history(settings, SYMBOLS, start=PAPER[0] - timedelta(days=60), end=PAPER[1] + timedelta(days=5))
    again = build_events(covering, settings, STRATS)
    for s in STRATS:
        dup = outcome_training_rows(outcomes, again[s])
        assert dup.rows.height == 0 and dup.duplicates == dup.trades > 0


def test_train_all_when_outcomes_store_then_rows_appended_and_logged(session) -> None:
    settings, store, history, events, _, outcomes = session
    retrain = settings.model_copy(update={"ml": settings.ml.model_copy(update={"registered_model_prefix": "rt",
                                                                                 "experiment_prefix": "rt"})})
    # Act
    reports = train_all(retrain, STRATS, history, log=True, backtest=False, outcomes_store=store)
    # Assert
    c = MlflowClient(settings.mlflow_tracking_uri)
    for rep in reports:
        n = outcomes.filter(pl.col("strategy") == rep.strategy).height
        assert rep.learning["outcome_rows_used"] == n > 0
        assert rep.n_events == events[rep.strategy].trainable.height + n
        run = c.get_run(rep.run_id)
        assert run.data.params["outcome_rows_used"] == str(n)
        assert run.data.metrics["outcome_rows_used"] == n and run.data.metrics["acc_trades"] == n
        assert "acc_realised_win_rate" in run.data.metrics and "acc_mae_take_profit_pct" in run.data.metrics
        path = c.download_artifacts(rep.run_id, "evaluation/ml_accuracy.json")
        assert json.loads(Path(path).read_text())["summary"][0]["trades"] == n
        assert c.get_model_version(model_name(rep.strategy, retrain), rep.version).run_id == rep.run_id


def test_ml_accuracy_when_scored_trades_then_win_rate_per_bucket_and_mae_as_hand_computed(session) -> None:
    _, _, _, _, _, outcomes = session
    acc = ml_accuracy(outcomes)
    edges = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 1.0)
    for s in STRATS:
        rows = outcomes.filter(pl.col("strategy") == s).rows(named=True)
        for b in acc.buckets.filter(pl.col("strategy") == s).iter_rows(named=True):
            inside = [r for r in rows if b["lo"] <= r["entry_confidence"] < b["hi"] or (b["hi"] == 1.0 and r["entry_confidence"] == 1.0)]
            assert b["lo"] in edges and b["trades"] == len(inside)
            assert b["realised_win_rate"] == pytest.approx(sum(r["success"] for r in inside) / len(inside))
        summ = acc.summary.filter(pl.col("strategy") == s).row(0, named=True)
        assert summ["trades"] == len(rows) == acc.buckets.filter(pl.col("strategy") == s)["trades"].sum()
        assert summ["mae_take_profit_pct"] == pytest.approx(sum(abs(r["entry_take_profit_pct"] - r["tp_target"]) for r in rows) / len(rows))
        assert summ["mae_stop_loss_pct"] == pytest.approx(sum(abs(r["entry_stop_loss_pct"] - r["sl_target"]) for r in rows) / len(rows))
    assert acc.summary.filter(pl.col("strategy") == "dca")["mae_hold_hours"][0] is not None
    assert acc.summary.filter(pl.col("strategy") == "swing")["mae_hold_hours"][0] is None  # swing predicts no hold
    # rule-only trades are not ML accuracy
    assert ml_accuracy(outcomes.with_columns(entry_rule_only=pl.lit(True))).summary.is_empty()


def test_read_outcomes_when_trade_has_no_decision_then_left_out(tmp_path: Path) -> None:
    store = DuckDBStore(tmp_path / "s.duckdb")
    store.init_schema()
    t = ClosedTrade(position_id="pos:x", symbol="BTC", strategy=StrategyName.DCA, entry_ts=PAPER[0], exit_ts=PAPER[1],
                    entry_price=100.0, exit_price=110.0, quantity=1.0, gross_pnl=10.0, fees=0.5, net_pnl=9.5,
                    exit_reason=ExitReason.TAKE_PROFIT, signal_id=f"dca:BTC:1h:{PAPER[0].isoformat()}")  # fmt: skip
    store.put_records("trade", [(t.position_id, t.model_dump(mode="json"))])
    assert ledger_trades(store).is_empty()
    assert read_outcomes(store, _settings(tmp_path)).is_empty()
    store.close()
