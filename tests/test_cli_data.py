"""`mlcrypto init / import / status / backfill-binance` through typer's CliRunner, settings from env."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from core.storage.duckdb_store import DuckDBStore
from deployments.commands import data as data_commands
from tests.test_binance_klines import binance  # noqa: F401 - the local Binance server fixture
from tests.test_import import small_data_dir  # noqa: F401 - small real data dir fixture

runner = CliRunner()


@pytest.fixture
def app() -> typer.Typer:
    app = typer.Typer()
    data_commands.register(app)
    return app


@pytest.fixture
def env(tmp_path: Path, small_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: F811
    var = tmp_path / "var"
    monkeypatch.setenv("MLCRYPTO_DATA__VAR_DIR", str(var))
    monkeypatch.setenv("MLCRYPTO_DATA__DATA_DIR", str(small_data_dir))
    monkeypatch.delenv("MLCRYPTO_SETTINGS_FILE", raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # tables on one line each, whatever the terminal
    return var


def test_init_when_fresh_var_dir_then_dirs_and_schema_created(app, env: Path) -> None:
    result = runner.invoke(app, ["init"])

    assert result.exit_code == 0, result.output
    assert (env / "store.duckdb").is_file() and (env / "reports").is_dir()
    with DuckDBStore(env / "store.duckdb") as s:
        assert s.schema_version() == 1
    assert runner.invoke(app, ["init"]).exit_code == 0


def test_import_then_status_when_small_data_then_table_lists_rows_and_gaps(app, env: Path) -> None:
    imported = runner.invoke(app, ["import", "--symbols", "btc,eth", "--timeframes", "1h", "-t", "4h", "--no-progress"])
    with DuckDBStore(env / "store.duckdb") as s:  # punch a hole to see it reported
        s._con.execute("DELETE FROM candles WHERE symbol = 'BTC' AND timeframe = '1h' AND ts BETWEEN '2024-03-02 05:00+00' AND '2024-03-02 06:00+00'")

    status = runner.invoke(app, ["status"])
    gaps = runner.invoke(app, ["status", "--symbol", "btc", "--timeframe", "1h"])

    assert imported.exit_code == 0, imported.output
    assert "derived from 1h" in imported.output and "120" in imported.output
    assert status.exit_code == 0, status.output
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in status.output.splitlines() if "│ BTC" in line]
    assert [r for r in rows if r[1] == "1h"] == [["BTC", "1h", "2024-03-01 00:00", "2024-03-10 23:00", "238", "2", "1"]]
    assert [r for r in rows if r[1] == "4h"] == [["BTC", "4h", "2024-03-01 00:00", "2024-03-10 20:00", "60", "0", "0"]]
    assert "2024-03-02 05:00" in gaps.output and "2024-03-02 07:00" in gaps.output


def test_import_when_bad_date_then_usage_error(app, env: Path) -> None:
    result = runner.invoke(app, ["import", "--start", "yesterday"])

    assert result.exit_code == 2
    assert "not an ISO date" in result.output


def test_status_when_store_empty_then_says_how_to_fill(app, env: Path) -> None:
    result = runner.invoke(app, ["status"])

    assert result.exit_code == 0
    assert "store is empty" in result.output


def test_cli_when_settings_invalid_then_config_error_exit_2(app, env: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLCRYPTO_STORE__BACKEND", "postgres")

    result = runner.invoke(app, ["status"])

    assert result.exit_code == 2
    assert "postgres_dsn" in result.output


def test_backfill_binance_when_local_server_then_bars_stored(app, env: Path, binance, monkeypatch) -> None:  # noqa: F811
    url, _ = binance
    monkeypatch.setenv("MLCRYPTO_FEED__BINANCE_REST_URL", url)

    result = runner.invoke(app, ["backfill-binance", "-s", "BTC", "--start", "2024-02-01", "--end", "2024-02-02T12:00"])

    assert result.exit_code == 0, result.output
    assert "36" in result.output
    with DuckDBStore(env / "store.duckdb") as s:
        got = s.read_candles("BTC", "1h")
    assert (len(got), got["ts"].min()) == (36, datetime(2024, 2, 1, tzinfo=UTC))
    assert got["ts"].max() == datetime(2024, 2, 2, 11, tzinfo=UTC) - timedelta(0)
