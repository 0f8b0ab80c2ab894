"""scan-and-trade and manage-positions as real Prefect flow runs (local API server from the harness)
against a DuckDB store in tmp filled with real 1h candles.

Window: the swing breakouts of 2026-04-16 18:00 UTC (ADA, DOGE, SOL among 8 coins); the scan runs at
19:00, when that bar has closed. Expected signals come from core's own detect_all on the same bars,
so the test checks the flow's plumbing (gate -> detect -> score -> decide -> size -> submit), not a
second copy of the rules.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from core.domain import ReasonCode
from core.errors import StoreError
from core.settings import Settings, load_settings
from core.storage.duckdb_store import DuckDBStore
from core.strategies.registry import detect_all
from tests.prefect_support import artifacts, task_runs

SYMBOLS = ["BTC", "ETH", "SOL", "XRP", "DOGE", "ADA", "BNB", "OP"]
NOW = datetime(2026, 4, 16, 19, tzinfo=UTC)
START = NOW - timedelta(days=40)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(data={"var_dir": tmp_path, "symbols": SYMBOLS})


@pytest.fixture
def bars(real_candles) -> pl.DataFrame:  # noqa: ANN001
    return real_candles("1h", SYMBOLS, START, NOW)


@pytest.fixture
def store(settings: Settings, bars: pl.DataFrame):  # noqa: ANN201
    s = DuckDBStore(settings.duckdb_path)
    s.init_schema()
    s.upsert_candles(bars)
    yield s
    s.close()


def _runtime(settings: Settings, store):  # noqa: ANN001, ANN202
    from core.scoring import RuleOnlyScorer
    from tasks.runtime import open_runtime

    return open_runtime(settings, store=store, scorer=RuleOnlyScorer(settings))


def _expected_signal_ids(bars: pl.DataFrame, settings: Settings, exclude: set[str] = frozenset()) -> set[str]:
    last = NOW - timedelta(hours=1)
    rows = detect_all(bars, settings).filter((pl.col("ts") == last) & ~pl.col("symbol").is_in(list(exclude)))
    return {f"{r['strategy']}:{r['symbol']}:1h:{last.isoformat()}" for r in rows.iter_rows(named=True)}


def test_scan_and_trade_when_real_candles_then_flow_run_decides_opens_and_publishes(
    prefect_harness: str, settings: Settings, store, bars: pl.DataFrame
) -> None:
    from flows.scan_and_trade import scan_and_trade

    # Arrange
    expected = _expected_signal_ids(bars, settings)
    assert expected, "the chosen window must contain signals on the last closed bar"
    rt = _runtime(settings, store)
    # Act
    state = scan_and_trade(now=NOW, runtime=rt, return_state=True)
    result = state.result()
    # Assert: completed; every expected signal decided once, with a reason; taken ones opened with
    # their order intents in the store's ledger; artifacts published on this flow run.
    assert state.is_completed()
    decided = {r.signal_id: r for r in rt.account.book.decisions.values()}
    assert set(decided) == expected
    assert all(isinstance(d.reason, ReasonCode) and d.taken == (d.reason is ReasonCode.TAKEN) for d in decided.values())
    taken = [d for d in decided.values() if d.taken]
    assert taken and len(result.opened) == len(taken)
    stored_orders = dict(store.get_records("order"))
    assert {o["position_id"] for o in stored_orders.values()} == {f"pos:{d.signal_id}" for d in taken}
    assert {a.key for a in artifacts(state.state_details.flow_run_id)} >= {"scan-report", "scan-decisions"}
    names = {t.name.rsplit("-", 1)[0] for t in task_runs(state.state_details.flow_run_id)}
    assert {"load_candles", "validate_candles", "detect_signals", "assess_regime", "plan_scan", "record_regime",
            "submit_orders"} <= names
    # The scan report counts the skips by reason code (core.domain.ReasonCode), as the decisions say.
    skipped = [d for d in decided.values() if not d.taken]
    assert sum(result.skips_by_code.values()) == len(skipped)
    assert set(result.skips_by_code) == {d.reason.value for d in skipped}


def test_scan_and_trade_when_rerun_on_same_bar_then_no_second_decision_or_order(
    prefect_harness: str, settings: Settings, store
) -> None:
    from flows.scan_and_trade import scan_and_trade

    rt = _runtime(settings, store)
    first = scan_and_trade(now=NOW, runtime=rt)
    orders_before = dict(store.get_records("order"))
    # Act: the 5-minute schedule scans the same closed hourly bar again.
    again = scan_and_trade(now=NOW + timedelta(minutes=5), runtime=rt)
    # Assert
    assert first.signals > 0 and again.signals == 0 and again.opened == []
    assert dict(store.get_records("order")) == orders_before


def test_scan_and_trade_when_defective_candles_for_one_symbol_then_only_that_symbol_is_left_out(
    prefect_harness: str, settings: Settings, store, bars: pl.DataFrame
) -> None:
    from flows.scan_and_trade import scan_and_trade

    # Arrange: a 3-hour hole in DOGE's recent bars (a defect the store accepts, the gate must not).
    hole = [NOW - timedelta(hours=h) for h in (6, 7, 8)]
    doge = bars.filter((pl.col("symbol") == "DOGE") & ~pl.col("ts").is_in(hole))
    fresh = DuckDBStore(settings.data.var_dir / "holed.duckdb")
    fresh.init_schema()
    fresh.upsert_candles(pl.concat([bars.filter(pl.col("symbol") != "DOGE"), doge]))
    rt = _runtime(settings, fresh)
    expected = _expected_signal_ids(bars, settings, exclude={"DOGE"})
    # Act
    state = scan_and_trade(now=NOW, runtime=rt, return_state=True)
    result = state.result()
    # Assert: DOGE failed the gate and was left out; the others were decided as usual; the failure is
    # stored and visible on the flow run as an artifact.
    assert result.gate_failed == ["DOGE"]
    assert set(rt.account.book.decisions) == expected
    assert not any(":DOGE:" in sid for sid in rt.account.book.decisions)
    gate = [p for _, p in fresh.get_records("gate_result") if p["symbol"] == "DOGE"]
    assert gate and not gate[-1]["passed"]
    assert "data-gate-failures" in {a.key for a in artifacts(state.state_details.flow_run_id)}
    fresh.close()


class _FlakyStore:
    """The real store, whose first last_bars call fails like a dropped connection."""

    def __init__(self, inner: DuckDBStore) -> None:
        self._inner = inner
        self.failures_left = 1

    def last_bars(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        if self.failures_left:
            self.failures_left -= 1
            raise StoreError("connection reset by peer (injected)")
        return self._inner.last_bars(*args, **kwargs)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self._inner, name)


def test_load_candles_when_store_fails_once_then_retried_and_flow_completes(
    prefect_harness: str, settings: Settings, store
) -> None:
    from flows.scan_and_trade import scan_and_trade

    flaky = _FlakyStore(store)
    rt = _runtime(settings, flaky)
    state = scan_and_trade(now=NOW, runtime=rt, return_state=True)
    assert state.is_completed() and flaky.failures_left == 0
    load = [t for t in task_runs(state.state_details.flow_run_id) if t.name.startswith("load_candles")]
    assert len(load) == 1 and load[0].run_count == 2 and load[0].state.is_completed()


def test_manage_positions_when_bars_close_after_scan_then_market_entries_fill_once(
    prefect_harness: str, settings: Settings, store, real_candles
) -> None:
    from flows.manage_positions import manage_positions_flow
    from flows.scan_and_trade import scan_and_trade

    rt = _runtime(settings, store)
    scan = scan_and_trade(now=NOW, runtime=rt)
    assert scan.opened
    # Act: the next hour's bars arrive; management runs twice (the every-minute schedule).
    store.upsert_candles(real_candles("1h", SYMBOLS, NOW, NOW + timedelta(hours=1)))
    first = manage_positions_flow(now=NOW + timedelta(hours=1), runtime=rt)
    second = manage_positions_flow(now=NOW + timedelta(hours=1, minutes=1), runtime=rt)
    # Assert: each market entry filled at the 19:00 bar once; the second run applied nothing.
    fills = dict(store.get_records("fill"))
    assert first.fills == len(scan.opened) == len(fills)
    assert second.bars_applied == 0 and second.fills == 0


class _FlakyReads(_FlakyStore):
    """The real store, whose first read_many fails (store error) or raises a venue error (`exc`)."""

    def __init__(self, inner: DuckDBStore, exc: Exception) -> None:
        super().__init__(inner)
        self.failures_left = 0
        self.exc = exc

    def read_many(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        if self.failures_left:
            self.failures_left -= 1
            raise self.exc
        return self._inner.read_many(*args, **kwargs)


def test_manage_positions_when_store_fails_then_retried_but_venue_error_is_not(
    prefect_harness: str, settings: Settings, store, real_candles
) -> None:
    from core.errors import TemporaryVenueError
    from flows.manage_positions import manage_positions_flow
    from flows.scan_and_trade import scan_and_trade

    # Arrange: positions open, the next hour's bars stored; the store's next read fails once.
    flaky = _FlakyReads(store, StoreError("connection reset by peer (injected)"))
    rt = _runtime(settings, flaky)
    assert scan_and_trade(now=NOW, runtime=rt).opened
    store.upsert_candles(real_candles("1h", SYMBOLS, NOW, NOW + timedelta(hours=1)))
    flaky.failures_left = 1
    # Act 1 / Assert 1: a store error is retried by Prefect and the run completes.
    state = manage_positions_flow(now=NOW + timedelta(hours=1), runtime=rt, return_state=True)
    runs = [t for t in task_runs(state.state_details.flow_run_id) if t.name.startswith("manage_positions")]
    assert state.is_completed() and len(runs) == 1 and runs[0].run_count == 2
    # Act 2 / Assert 2: a venue's temporary error (the adapter already retried it) is not retried on top.
    flaky.exc, flaky.failures_left = TemporaryVenueError("venue busy (injected)"), 1
    state = manage_positions_flow(now=NOW + timedelta(hours=2), runtime=rt, return_state=True)
    runs = [t for t in task_runs(state.state_details.flow_run_id) if t.name.startswith("manage_positions")]
    assert state.is_failed() and len(runs) == 1 and runs[0].run_count == 1
