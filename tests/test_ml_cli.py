"""`mlcrypto train / evaluate / promote` end to end on a real data slice and a real MLflow store in tmp."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from deployments.cli import app

SLICE = ["--symbols", "BTC,ETH,SOL,DOGE,LINK,XRP", "--start", "2023-01-01", "--end", "2024-01-01"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "MLCRYPTO_DATA__VAR_DIR": str(tmp_path),
        "MLCRYPTO_ML__TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
        "MLCRYPTO_ML__N_ESTIMATORS": "30",
        "COLUMNS": "200",
    }


def test_cli_when_promote_without_training_then_says_train_first(env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["promote", "--strategy", "swing"], env=env)
    assert result.exit_code == 0, result.output
    assert "has no challenger; train first" in result.output


def test_cli_when_unknown_strategy_then_usage_error(env: dict[str, str]) -> None:
    result = CliRunner().invoke(app, ["evaluate", "--strategy", "martingale"], env=env)
    assert result.exit_code == 2
    assert "unknown strategy" in result.output


def test_cli_when_train_with_promote_then_champion_registered(env: dict[str, str]) -> None:
    # Act
    result = CliRunner().invoke(app, ["train", "--strategy", "dca", *SLICE, "--promote"], env=env)
    # Assert
    assert result.exit_code == 0, result.output
    assert "walk-forward, pooled out-of-sample" in result.output
    assert "no champion yet" in result.output
    c = MlflowClient(env["MLCRYPTO_ML__TRACKING_URI"])
    mv = c.get_model_version_by_alias("mlcrypto-dca", "champion")
    assert str(mv.version) == "1"
    assert "buy-and-hold BTC" in result.output
    metrics = c.get_run(mv.run_id).data.metrics
    assert {"bt_bh_total_return", "bt_bh_sharpe", "bt_bh_max_drawdown"} <= set(metrics)
    assert metrics["bt_bh_trades"] == 1
