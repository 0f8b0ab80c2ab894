"""Hostile files for `import`: corrupt or truncated parquet, ragged CSV, implausible bars. The error
names the file and the row (or byte offset), and the real store (both backends) is left as it was."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from core.data_import import import_candles
from core.errors import DataQualityError

ROOT = Path(__file__).resolve().parent.parent
START, END = datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 4, tzinfo=UTC)
SYMBOLS = ["BTC", "ETH"]


def _as_shipped(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.select("symbol", pl.col("ts").dt.cast_time_unit("ms"), "open", "high", "low", "close", "volume")


@pytest.fixture
def files_dir(tmp_path: Path, real_candles) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    # Small row groups so a damaged page sits in a row group in the middle of the file.
    _as_shipped(real_candles("1h", SYMBOLS, START, END)).write_parquet(d / "ohlcv_1h.parquet", row_group_size=20)
    _as_shipped(real_candles("1d", SYMBOLS, START, END)).write_parquet(d / "ohlcv_1d.parquet")
    return d


def _snapshot(store) -> pl.DataFrame:
    return pl.concat([store.read_many(SYMBOLS, tf) for tf in ("1h", "4h", "1d")])


def _corrupt_middle(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    mid = len(raw) // 2
    raw[mid : mid + 200] = b"\x55" * 200
    path.write_bytes(bytes(raw))


def _truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) * 2 // 3])


@pytest.mark.parametrize(
    ("damage", "where"),
    [(_truncate, "footer unreadable"), (_corrupt_middle, r"row group \d+ \(rows \d+\.\.\d+, byte offset \d+\)")],
)
def test_import_when_parquet_damaged_then_error_names_file_and_offset_and_store_unchanged(store, files_dir, damage, where):
    # Arrange: a first good import, then the 1h file damaged.
    import_candles(store, files_dir, derived_timeframes=("4h",), progress=False)
    before = _snapshot(store)
    damage(files_dir / "ohlcv_1h.parquet")
    # Act
    with pytest.raises(DataQualityError, match=where) as err:
        import_candles(store, files_dir, derived_timeframes=("4h",), progress=False)
    # Assert
    assert str(files_dir / "ohlcv_1h.parquet") in str(err.value)
    assert _snapshot(store).equals(before)


def test_import_when_csv_ragged_then_error_names_line_and_nothing_written(store, files_dir):
    # Arrange: the 1d file as CSV (read first: nothing may be written before the ragged 1h file fails).
    (files_dir / "ohlcv_1h.parquet").unlink()
    lines = ["symbol,ts,open,high,low,close,volume", "BTC,1709251200000,1,2,0.5,1.5,10",
             "BTC,1709254800000,1,2,0.5,1.5", "BTC,1709258400000,1,2,0.5,1.5,10"]
    (files_dir / "ohlcv_1h.csv").write_text("\n".join(lines) + "\n")
    # Act
    with pytest.raises(DataQualityError, match="ragged CSV, line 3 has 6 fields, the header has 7") as err:
        import_candles(store, files_dir, derived_timeframes=(), progress=False)
    # Assert
    assert "ohlcv_1h.csv" in str(err.value)
    assert _snapshot(store).is_empty()


@pytest.mark.parametrize(
    ("ts", "kind"),
    [(datetime(2100, 1, 1, tzinfo=UTC), "implausible_ts"), (datetime(1969, 12, 31, tzinfo=UTC), "implausible_ts"),
     (datetime(2006, 1, 1, tzinfo=UTC), "implausible_ts")],
)
def test_import_when_bar_implausible_then_refused_naming_file_and_row_and_store_unchanged(store, files_dir, ts, kind):
    path = files_dir / "ohlcv_1d.parquet"
    frame = pl.read_parquet(path)
    bad = frame.head(1).with_columns(ts=pl.lit(ts).dt.cast_time_unit("ms"))
    pl.concat([frame, bad]).write_parquet(path)
    with pytest.raises(DataQualityError, match=kind) as err:
        import_candles(store, files_dir, derived_timeframes=(), progress=False)
    assert str(path) in str(err.value) and f"BTC 1d {ts:%Y-%m-%d}" in str(err.value)
    assert _snapshot(store).is_empty()


def test_import_when_price_absurd_then_refused(store, files_dir):
    path = files_dir / "ohlcv_1d.parquet"
    frame = pl.read_parquet(path)
    frame.with_columns(high=pl.when(pl.int_range(pl.len()) == 2).then(1e300).otherwise(pl.col("high"))).write_parquet(path)
    with pytest.raises(DataQualityError, match="implausible_price"):
        import_candles(store, files_dir, derived_timeframes=(), progress=False)
    assert _snapshot(store).is_empty()


def test_cli_import_when_parquet_truncated_then_exit_1_naming_file(tmp_path, files_dir):
    _truncate(files_dir / "ohlcv_1h.parquet")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLCRYPTO_")} | {
        "MLCRYPTO_DATA__DATA_DIR": str(files_dir), "MLCRYPTO_DATA__VAR_DIR": str(tmp_path / "var")}
    out = subprocess.run([sys.executable, "-m", "deployments.cli", "import", "--no-progress", "-s", "BTC,ETH"],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=300)
    text = (out.stdout + out.stderr).replace("\n", "")
    assert out.returncode == 1
    assert "ohlcv_1h.parquet" in text and "footer unreadable" in text
    assert "Traceback" not in text


def test_import_when_future_bar_then_status_and_gap_repair_never_see_it(tmp_path, files_dir):
    # The poisoning: a year-20000 bar must never reach the store (status would overflow).
    from core.storage.duckdb_store import DuckDBStore

    store = DuckDBStore(tmp_path / "s.duckdb")
    bad = pl.DataFrame({"symbol": ["BTC"], "timeframe": ["1d"], "ts": [datetime(9999, 1, 1, tzinfo=UTC)],
                        "open": [1.0], "high": [1.0], "low": [1.0], "close": [1.0], "volume": [1.0]})
    with pytest.raises(DataQualityError, match="implausible_ts"):
        store.upsert_candles(bad.with_columns(pl.col("ts").dt.cast_time_unit("us")))
    ok = bad.with_columns(ts=pl.lit(datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
                                    - timedelta(days=1)).dt.cast_time_unit("us"))
    assert store.upsert_candles(ok) == 1
    assert store.coverage()["last"].to_list() == ok["ts"].to_list()
    store.close()


def test_status_when_store_holds_bars_from_before_the_bounds_then_reported_not_crashing(tmp_path, monkeypatch):
    # A store written by an older version (no bounds): rows dated year 20000 and 1960, put in by SQL.
    from typer.testing import CliRunner

    from core.storage.duckdb_store import DuckDBStore
    from deployments.cli import app

    store = DuckDBStore(tmp_path / "store.duckdb")
    store.init_schema()
    store._con.execute(
        "INSERT INTO candles VALUES ('BTC','1h','2024-01-01 00:00:00+00',1,1,1,1,1), "
        "('BTC','1h','20000-01-01 00:00:00+00',1,1,1,1,1), ('ETH','1h','1960-01-01 00:00:00+00',1,1,1,1,1)")
    store.close()
    monkeypatch.setenv("MLCRYPTO_DATA__VAR_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    assert "+20000-01-01 00:00" in result.output and "1960-01-01 00:00" in result.output
    assert "implausible bars stored" in result.output and "BTC 1h, ETH 1h" in result.output
