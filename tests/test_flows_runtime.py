"""The served flows of `mlcrypto up` run in separate processes on one DuckDB file: SharedDuckDBStore
opens it per call and waits while another process holds it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import StoreError
from core.storage.duckdb_store import DuckDBStore
from tasks.runtime import SharedDuckDBStore

HOLD = """
import sys, time
from core.storage.duckdb_store import DuckDBStore
s = DuckDBStore(sys.argv[1]); print("held", flush=True); time.sleep(float(sys.argv[2])); s.close()
"""


def _hold(path: Path, seconds: float) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path), str(seconds)], stdout=subprocess.PIPE, text=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def test_shared_store_when_another_process_holds_the_file_then_waits_and_writes(tmp_path: Path, real_candles) -> None:
    path = tmp_path / "store.duckdb"
    s = DuckDBStore(path)
    s.init_schema()
    s.close()
    bars = real_candles("1h", ["BTC"]).head(48)
    holder = _hold(path, 1.5)
    try:
        written = SharedDuckDBStore(path, batch_rows=1000, wait_seconds=60).upsert_candles(bars)
    finally:
        holder.wait(timeout=60)
    assert written == 48
    assert SharedDuckDBStore(path, batch_rows=1000).read_candles("BTC", "1h").height == 48


def test_shared_store_when_file_stays_locked_then_store_error_after_the_wait(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    DuckDBStore(path).close()
    holder = _hold(path, 30)
    try:
        with pytest.raises(StoreError, match="lock"):
            SharedDuckDBStore(path, batch_rows=1000, wait_seconds=0.5).coverage()
    finally:
        holder.kill()
        holder.wait()


def test_runtime_account_when_live_mode_then_live_driver_on_hummingbot_only_with_confirmation(tmp_path: Path) -> None:
    from core.errors import ConfigError
    from core.settings import load_settings
    from core.trading.driver import Mode
    from core.trading.live import LiveDriver
    from core.trading.simulated import SimulatedDriver
    from tasks.runtime import open_runtime

    settings = load_settings(data={"var_dir": tmp_path}, execution={"mode": "live", "confirm_live": True})
    with open_runtime(settings) as rt:
        assert rt.account.venue.name == "hummingbot"  # the book's orders go to the live venue
        assert isinstance(rt.account.driver, LiveDriver) and rt.account.mode is Mode.LIVE  # chosen by mode, not name
    with open_runtime(load_settings(data={"var_dir": tmp_path / "paper"})) as rt:
        assert isinstance(rt.account.driver, SimulatedDriver) and rt.account.mode is Mode.PAPER
    unconfirmed = settings.model_copy(
        update={"execution": settings.execution.model_copy(update={"confirm_live": False})}
    )
    with open_runtime(unconfirmed) as rt, pytest.raises(ConfigError, match="live trading refused"):
        _ = rt.account
