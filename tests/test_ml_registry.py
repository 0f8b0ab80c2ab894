"""MLflow tracking, registry aliases, promotion and the champion scorer, on a real MLflow store (sqlite in
a tmp dir) and models trained on a real data slice (6 coins x 2023, 1h)."""

from __future__ import annotations

from datetime import UTC, datetime

import mlflow
import numpy as np
import polars as pl
import pytest
from mlflow import MlflowClient

from core.scoring import RuleOnlyScorer
from core.settings import Settings, load_settings
from core.strategies.registry import signals_from_frame
from models.dataset import StrategyEvents, build_events
from models.packaging import download_version
from models.pipeline import TrainingReport, train_strategy
from models.promotion import promote
from models.run_log import log_training_run
from models.scorer import MLScorer
from models.tracking import CHALLENGER, CHAMPION, alias_version, experiment_name, model_name

SYMBOLS = ["BTC", "ETH", "SOL", "DOGE", "LINK", "XRP"]
START, END = datetime(2023, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC)


def _settings(tmp: str, prefix: str, **ml: object) -> Settings:
    return load_settings(
        data={"var_dir": tmp},
        ml={"tracking_uri": f"sqlite:///{tmp}/mlflow.db", "registered_model_prefix": prefix,
            "experiment_prefix": prefix, "n_estimators": 30, "walk_forward_folds": 3, **ml},
    )  # fmt: skip


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("mlflow"))


@pytest.fixture(scope="module")
def bars(real_candles) -> pl.DataFrame:
    return real_candles("1h", SYMBOLS, START, END)


@pytest.fixture(scope="module")
def events(bars: pl.DataFrame, store_dir: str):
    return build_events(bars, _settings(store_dir, "x"), ("dca",))["dca"]


@pytest.fixture(scope="module")
def trained(events, bars: pl.DataFrame, store_dir: str) -> TrainingReport:
    """Walk-forward + OOS backtest + final fit, not logged yet (each test logs under its own name)."""
    return train_strategy(events, bars, _settings(store_dir, "x"), log=False)


def _log(report: TrainingReport, events, settings: Settings, bt_shift: float = 0.0, window: tuple | None = None) -> str:
    bt = dict(report.backtest)
    bt["ml"] = {**bt["ml"], "total_return": bt["ml"]["total_return"] + bt_shift}
    if window is not None:
        bt["window"] = window
    return log_training_run(report.model, report.walk_forward, bt, settings, events.trainable, events.trainable.height).version


@pytest.fixture(scope="module")
def champion(trained, events, store_dir) -> tuple[Settings, str, object]:
    """One logged version, promoted by the first promotion (read-only for the tests that use it)."""
    settings = _settings(store_dir, "c")
    version = _log(trained, events, settings)
    return settings, version, promote("dca", settings)


def test_log_training_run_when_logged_then_params_metrics_plots_and_model_recorded(trained, champion) -> None:
    # Arrange / Act: the fixture logged one run.
    settings, version, _ = champion
    # Assert
    c = MlflowClient(settings.mlflow_tracking_uri)
    name = model_name("dca", settings)
    assert alias_version(c, name, CHALLENGER) == version
    run = c.get_run(c.get_model_version(name, version).run_id)
    assert run.data.params["settings_fingerprint"] == settings.fingerprint()
    assert run.info.status == "FINISHED" and "mlflow.source.name" in run.data.tags
    for key in ("oos_auc", "oos_brier", "oos_brier_base", "oos_base_rate", "oos_mae_take_profit_pct",
                "bt_ml_total_return", "bt_rule_total_return"):
        assert key in run.data.metrics, key
    assert run.data.metrics["oos_auc"] == pytest.approx(trained.walk_forward.pooled["auc"])
    arts = {a.path for d in ("plots", "evaluation", "explanations") for a in c.list_artifacts(run.info.run_id, d)}
    assert {"plots/feature_importance.png", "plots/calibration.png", "plots/oos_equity.png",
            "evaluation/oos_predictions.parquet", "evaluation/oos_equity_ml.parquet",
            "explanations/shap_dca_confidence.png", "explanations/shap_dca_take_profit_pct.png"} <= arts
    # issue 12: how sure we are -- intervals around the pooled OOS AUC/Brier, the DSR with its trial count
    m = run.data.metrics
    assert m["unc_auc"] == pytest.approx(m["oos_auc"])
    assert m["unc_auc_ci_low"] <= m["unc_auc"] <= m["unc_auc_ci_high"]
    assert m["unc_brier_ci_low"] <= m["unc_brier"] <= m["unc_brier_ci_high"]
    assert m["unc_n_trials"] == 1.0 and 0.0 <= m["unc_deflated_sharpe"] <= 1.0
    info = mlflow.models.Model.load(download_version(c, name, version))  # the package's MLmodel
    assert info.signature is not None and "coin_vol_30d" in info.signature.inputs.input_names()
    assert info.saved_input_example_info is not None


def test_promote_when_no_champion_then_first_challenger_becomes_champion(champion) -> None:
    settings, version, decision = champion
    assert decision.promoted and decision.champion == version
    assert "no champion yet" in decision.reason
    again = promote("dca", settings)
    assert not again.promoted and "already champion" in again.reason


def test_promote_when_challenger_must_beat_champion_on_same_window_then_only_better_one_promoted(
    trained, events, store_dir
) -> None:
    # Arrange: champion v1; min improvement 1 percentage point of total return.
    settings = _settings(store_dir, "t3", promotion_min_improvement=0.01)
    v1 = _log(trained, events, settings)
    promote("dca", settings)
    # Act / Assert: +0.5 pp is not enough, +2 pp is.
    _log(trained, events, settings, bt_shift=0.005)
    kept = promote("dca", settings)
    assert not kept.promoted and kept.champion == v1 and "does not beat" in kept.reason
    v3 = _log(trained, events, settings, bt_shift=0.02)
    won = promote("dca", settings)
    assert won.promoted and won.champion == v3
    c = MlflowClient(settings.mlflow_tracking_uri)
    assert alias_version(c, model_name("dca", settings), CHAMPION) == v3


def test_promote_when_windows_differ_then_both_rebacktested_after_champion_training_data(
    trained, events, bars, store_dir
) -> None:
    # Arrange: champion trained on the first half of 2023 only; challenger on the whole year.
    settings = _settings(store_dir, "t4")
    first_half = StrategyEvents("dca", events.feature_names, events.events.filter(pl.col("ts") < datetime(2023, 7, 1, tzinfo=UTC)))
    old = train_strategy(first_half, bars, settings, log=True, backtest=True)
    assert promote("dca", settings).champion == old.version
    _log(trained, events, settings)
    # Act
    decision = promote("dca", settings)
    # Assert: compared on the challenger's OOS events after the champion's training data, with both numbers
    assert "re-backtested" in decision.reason
    assert decision.window is not None and decision.window[0] > old.model.trained_until.isoformat()
    assert decision.challenger_value is not None and decision.champion_value is not None
    better = decision.challenger_value > decision.champion_value + settings.ml.promotion_min_improvement
    assert decision.promoted == better
    assert decision.champion == (decision.challenger if better else old.version)


# -- scorer -----------------------------------------------------------------------------------------


def _signals_at(bars: pl.DataFrame, events, n: int = 3):
    """Real DCA signal rows at a few timestamps, with the bars up to each timestamp."""
    from core.strategies.registry import detect_all

    rows = detect_all(bars, load_settings()).filter(pl.col("strategy") == "dca")
    ts = rows["ts"].unique().sort()[-n:]
    return [(t, rows.filter(pl.col("ts") == t), bars.filter(pl.col("ts") <= t)) for t in ts]


def test_scorer_when_no_champion_then_rule_only_defaults(bars, events, store_dir) -> None:
    settings = _settings(store_dir, "t5")
    _, rows, _ = _signals_at(bars, events, 1)[0]
    signals = signals_from_frame(rows)
    scores = MLScorer(settings).score(signals)
    assert scores == RuleOnlyScorer(settings).score(signals)
    assert all(s.rule_only and s.model_version is None for s in scores)
    assert "rule-only" in scores[0].source


def test_scorer_when_champion_then_scores_equal_model_predictions(trained, bars, events, champion) -> None:
    # Arrange
    settings, version, _ = champion
    scorer = MLScorer(settings)
    for _t, rows, upto in _signals_at(bars, events):
        signals = signals_from_frame(rows)
        scorer.observe_bars(upto)  # context at t, from bars <= t only
        # Act
        scores = scorer.score(signals)
        # Assert: same as the trained model on the training frame's rows of those events.
        ids = [s.signal_id for s in signals]
        frame = events.events.filter(pl.col("signal_id").is_in(ids))
        frame = frame.join(pl.DataFrame({"signal_id": ids, "_o": range(len(ids))}), on="signal_id").sort("_o")
        expected = trained.model.predict(trained.model.matrix(frame))
        assert [s.confidence for s in scores] == pytest.approx(expected["confidence"].tolist(), abs=1e-6)
        assert [s.take_profit_pct for s in scores] == pytest.approx(expected["take_profit_pct"].tolist(), abs=1e-6)
        assert [s.hold.total_seconds() / 3600 for s in scores] == pytest.approx(expected["hold_hours"].tolist(), abs=1e-4)
        assert all(not s.rule_only and s.model_version == f"{model_name('dca', settings)}/{version}" for s in scores)


def test_scorer_when_alias_moves_then_new_champion_loaded(trained, bars, events, store_dir) -> None:
    # Arrange: champion v1 loaded by a scorer that checks the alias on every call.
    settings = _settings(store_dir, "t7")
    _log(trained, events, settings)
    promote("dca", settings)
    scorer = MLScorer(settings, alias_check_seconds=0)
    _, rows, upto = _signals_at(bars, events, 1)[0]
    signals = signals_from_frame(rows)
    first = scorer.score(signals)[0].model_version
    # a second scorer with a long check interval keeps its loaded model until the interval passes
    lazy = MLScorer(settings, alias_check_seconds=3600)
    lazy.score(signals)
    # Act: a better challenger is promoted.
    v2 = _log(trained, events, settings, bt_shift=0.5)
    assert promote("dca", settings).promoted
    # Assert
    assert first.endswith("/1")
    assert scorer.score(signals)[0].model_version.endswith(f"/{v2}")
    assert lazy.score(signals)[0].model_version.endswith("/1")


def test_scorer_when_mixed_batch_then_order_kept_and_other_strategies_rule_only(bars, champion) -> None:
    from core.strategies.registry import detect_all

    settings, _, _ = champion
    rows = detect_all(bars, load_settings()).sort("ts").tail(40)
    signals = signals_from_frame(rows)
    assert {s.strategy.value for s in signals} >= {"swing"}
    scores = MLScorer(settings).score(signals)
    assert len(scores) == len(signals)
    for s, sc in zip(signals, scores, strict=True):
        assert sc.rule_only == (s.strategy.value != "dca")
    # the same signals in reverse order get the same scores in reverse order
    rev = MLScorer(settings).score(list(reversed(signals)))
    assert rev == list(reversed(scores))
    assert np.isfinite([sc.confidence for sc in scores]).all()


def test_log_promote_score_when_process_points_elsewhere_then_nothing_leaks_there(
    trained, bars, events, store_dir, tmp_path, monkeypatch
) -> None:
    # Arrange: the process-wide MLflow store (what the fluent API would use) is another sqlite file.
    import os

    elsewhere = f"sqlite:///{tmp_path}/elsewhere.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    settings = _settings(store_dir, "t9")
    # Act: log two versions, promote, score with the champion.
    _log(trained, events, settings)
    assert promote("dca", settings).promoted
    _log(trained, events, settings, bt_shift=0.5)
    assert promote("dca", settings).promoted
    _, rows, upto = _signals_at(bars, events, 1)[0]
    scorer = MLScorer(settings)
    scorer.observe_bars(upto)
    scores = scorer.score(signals_from_frame(rows))
    # Assert: everything went to the settings' store; the process-wide URIs are what they were.
    assert {s.model_version for s in scores} == {f"{model_name('dca', settings)}/2"}
    assert mlflow.get_tracking_uri() == elsewhere and os.environ["MLFLOW_TRACKING_URI"] == elsewhere
    assert "MLFLOW_REGISTRY_URI" not in os.environ
    assert mlflow.active_run() is None
    assert [e.name for e in MlflowClient(elsewhere).search_experiments()] == ["Default"]
    assert MlflowClient(elsewhere).search_registered_models() == []


def test_log_training_run_when_model_logging_fails_then_run_marked_failed_and_nothing_registered(
    trained, events, store_dir
) -> None:
    # Arrange: an input example without one of the model's features (the package cannot be built).
    settings = _settings(store_dir, "t10")
    example = events.trainable.drop("coin_vol_30d")
    # Act
    with pytest.raises(pl.exceptions.ColumnNotFoundError):
        log_training_run(trained.model, trained.walk_forward, trained.backtest, settings, example, example.height)
    # Assert: the run is kept, marked FAILED (its metrics are there to inspect); no version was registered.
    c = MlflowClient(settings.mlflow_tracking_uri)
    runs = c.search_runs([c.get_experiment_by_name(experiment_name("dca", settings)).experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "oos_auc" in runs[0].data.metrics
    assert c.search_registered_models(f"name = '{model_name('dca', settings)}'") == []
