"""`mlcrypto health` on a real DuckDB store filled with real 1h candles."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest
from typer.testing import CliRunner

from core.storage.duckdb_store import DuckDBStore
from deployments.cli import app

START = datetime(2024, 5, 1, tzinfo=UTC)
END = START + timedelta(days=3)


@pytest.fixture
def env(tmp_path, monkeypatch, real_candles):
    path = tmp_path / "health.duckdb"
    monkeypatch.setenv("MLCRYPTO_STORE__DUCKDB_PATH", str(path))
    monkeypatch.setenv("MLCRYPTO_DATA__VAR_DIR", str(tmp_path))
    monkeypatch.delenv("MLCRYPTO_ALERTS__SLACK_WEBHOOK_URL", raising=False)
    bars = real_candles("1h", ["BTC", "ETH", "SOL"], START, END)
    return path, bars


def _fill(path, bars: pl.DataFrame) -> None:
    store = DuckDBStore(path)
    store.upsert_candles(bars)
    store.close()


def _rows(output: str) -> dict[str, str]:
    """Table rows of the health output by symbol."""
    return {line.split("│")[1].strip(): line for line in output.splitlines() if line.count("│") > 3}


def _run(*args: str):
    return CliRunner().invoke(app, ["health", "--symbols", "BTC,ETH,SOL", "--timeframe", "1h", "--bars", "48", *args])


def test_health_when_all_symbols_fresh_and_complete_then_exit_zero(env):
    path, bars = env
    _fill(path, bars)
    result = _run("--now", (END + timedelta(minutes=5)).isoformat())
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    assert all("pass" in rows[s] for s in ("BTC", "ETH", "SOL"))
    assert "3 passed, 0 failed" in result.output


def test_health_when_one_symbol_has_a_gap_and_one_is_missing_then_exit_one_and_table_names_them(env):
    path, bars = env
    hole = pl.col("ts").is_between(END - timedelta(hours=10), END - timedelta(hours=7))
    _fill(path, bars.filter(~((pl.col("symbol") == "ETH") & hole)).filter(pl.col("symbol") != "SOL"))
    result = _run("--now", (END + timedelta(minutes=5)).isoformat())
    assert result.exit_code == 1
    lines = _rows(result.output)
    assert "FAIL" in lines["ETH"] and "no_gaps" in lines["ETH"]
    assert "FAIL" in lines["SOL"] and "has_bars" in lines["SOL"]
    assert "pass" in lines["BTC"]
    store = DuckDBStore(path)
    records = store.get_records("gate_result")
    store.close()
    assert {v["symbol"]: v["passed"] for _, v in records} == {"BTC": True, "ETH": False, "SOL": False}


def test_health_when_checked_hours_later_then_stale_symbols_fail(env):
    path, bars = env
    _fill(path, bars)
    result = _run("--now", (END + timedelta(hours=6)).isoformat())
    assert result.exit_code == 1
    rows = _rows(result.output)
    assert all("FAIL" in rows[s] and "fresh" in rows[s] for s in ("BTC", "ETH", "SOL"))
