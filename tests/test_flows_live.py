"""Live mode end to end: scan-and-trade and manage-positions as real Prefect flow runs whose ledger
sends its orders to the local Hummingbot API server (tests/hummingbot_server.py, a real HTTP server).

Window: the swing breakouts of 2026-04-16 18:00 UTC on real 1h candles (as tests/test_flows_scan.py);
the scan runs at 19:00. The server's market fills at its mark (set from the real closes) and stamps
its trades with a simulated clock just after the bar times, so the venue's fill times and the bars
share one timeline as they do when trading at the wall clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from core.settings import Settings
from core.storage.duckdb_store import DuckDBStore
from tests.hummingbot_server import (
    TAKER_FEE,
    ExchangeState,
    HummingbotTestServer,
    settings_for,
)
from tests.prefect_support import task_runs

SYMBOLS = ["BTC", "ETH", "SOL", "XRP", "DOGE", "ADA", "BNB", "OP"]
NOW = datetime(2026, 4, 16, 19, tzinfo=UTC)
START = NOW - timedelta(days=40)
LATER = NOW + timedelta(hours=96)


class SimClock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
def bars(real_candles) -> pl.DataFrame:  # noqa: ANN001
    return real_candles("1h", SYMBOLS, START, LATER)


@pytest.fixture
def clock() -> SimClock:
    return SimClock(NOW + timedelta(minutes=2))


@pytest.fixture
def hb(bars: pl.DataFrame, clock: SimClock) -> Iterator[HummingbotTestServer]:
    last = bars.filter(pl.col("ts") < NOW).group_by("symbol").agg(pl.col("close").sort_by("ts").last())
    marks = {f"{sym}-USD": px for sym, px in last.iter_rows()}
    with HummingbotTestServer(ExchangeState(marks=marks, clock=clock)) as server:
        yield server


def _settings(hb: HummingbotTestServer, tmp_path: Path, **execution: object) -> Settings:
    s = settings_for(hb, **execution)
    return s.model_copy(update={"data": s.data.model_copy(update={"var_dir": tmp_path, "symbols": tuple(SYMBOLS)})})


@pytest.fixture
def store(tmp_path: Path, bars: pl.DataFrame) -> Iterator[DuckDBStore]:
    s = DuckDBStore(tmp_path / "store.duckdb")
    s.init_schema()
    s.upsert_candles(bars.filter(pl.col("ts") < NOW))
    yield s
    s.close()


def _runtime(settings: Settings, store: DuckDBStore):  # noqa: ANN202
    from core.scoring import RuleOnlyScorer
    from tasks.runtime import open_runtime

    return open_runtime(settings, store=store, scorer=RuleOnlyScorer(settings))


def _orders(hb: HummingbotTestServer, side: str) -> list[dict]:
    return [o for o in hb.state.orders_at_venue() if o["trade_type"] == side]


def _trade_price(hb: HummingbotTestServer, order_id: str) -> float:
    (trade,) = [t for t in hb.state.trades if t["order_id"] == order_id]
    return trade["price"]


def test_live_flows_when_confirmed_then_entries_fill_at_venue_and_exit_closes_trade_with_venue_fees(
    prefect_harness: str, hb: HummingbotTestServer, clock: SimClock, store: DuckDBStore, bars: pl.DataFrame,
    tmp_path: Path,
) -> None:
    from flows.manage_positions import manage_positions_flow
    from flows.scan_and_trade import scan_and_trade

    settings = _settings(hb, tmp_path, mode="live", confirm_live=True)
    rt = _runtime(settings, store)
    # Act 1: the scan at 19:00 submits the entries to the venue (market buys fill there at the mark).
    scan = scan_and_trade(now=NOW, runtime=rt)
    pf = rt.account
    assert scan.opened, "the window must open positions"
    entries = [o for o in pf.book.orders.values() if o.purpose == "entry"]
    buys = _orders(hb, "BUY")
    assert len(buys) == len(entries) == len(hb.state.trades)  # each entry arrived once
    assert {o.venue_order_id for o in entries} == {b["order_id"] for b in buys}
    assert not pf.book.fills  # the ledger books nothing until the venue reports it
    # Act 2: the 19:00 bar closes; manage-positions reconciles, pulls the venue's fills, applies the bar.
    store.upsert_candles(bars.filter(pl.col("ts") == NOW))
    first = manage_positions_flow(now=NOW + timedelta(hours=1), runtime=rt)
    assert first.fills == len(entries)
    for o in entries:
        pos = pf.book.positions[o.position_id]
        trade = next(t for t in hb.state.trades if t["order_id"] == o.venue_order_id)
        assert pos.quantity == pytest.approx(trade["amount"]) and pos.avg_price == pytest.approx(trade["price"])
        assert pos.entry_fees == pytest.approx(trade["price"] * trade["amount"] * TAKER_FEE)
    # Act 3: four days of bars close; the rules fire on some of them; the SELLs fill at the venue's
    # mark of that moment (the last close seen), stamped later on the simulated clock.
    clock.at = LATER
    for sym, px in bars.group_by("symbol").agg(pl.col("close").sort_by("ts").last()).iter_rows():
        hb.state.marks[f"{sym}-USD"] = px
    store.upsert_candles(bars.filter(pl.col("ts") > NOW))
    second = manage_positions_flow(now=LATER, runtime=rt)
    third = manage_positions_flow(now=LATER + timedelta(minutes=1), runtime=rt)
    # Assert: one SELL per closed trade, of the held quantity; P&L and fees from the venue's fills.
    sells = _orders(hb, "SELL")
    assert pf.book.trades and len(second.exits) == len(pf.book.trades) == len(sells) and third.exits == []
    for t in pf.book.trades.values():
        pos = pf.book.positions[t.position_id]
        sell = next(s for s in sells if s["order_id"] == pf.book.orders[f"{t.position_id}:x"].venue_order_id)
        buy = next(b for b in buys if b["order_id"] == pf.book.orders[f"{t.position_id}:e0"].venue_order_id)
        assert sell["amount"] == pytest.approx(buy["amount"]) and sell["order_type"] == "MARKET"
        entry_px, exit_px = _trade_price(hb, buy["order_id"]), _trade_price(hb, sell["order_id"])
        assert exit_px == hb.state.marks[f"{t.symbol}-USD"]
        fees = (entry_px * buy["amount"] + exit_px * sell["amount"]) * TAKER_FEE
        gross = (exit_px - entry_px) * buy["amount"]
        assert t.fees == pytest.approx(fees) and t.net_pnl == pytest.approx(gross - fees)
        assert t.exit_ts == LATER and pos.status == "closed" and t.exit_reason.value != "end_of_data"
    assert pf.book.cash == pytest.approx(hb.state.balances["USD"] - 10_000.0 + settings.risk.capital)
    assert pf.book.realised_pnl == pytest.approx(sum(t.net_pnl for t in pf.book.trades.values()))


def test_live_scan_when_send_times_out_then_no_task_retry_and_next_run_resends_without_doubling(
    prefect_harness: str, hb: HummingbotTestServer, store: DuckDBStore, tmp_path: Path
) -> None:
    from core.domain import OrderStatus
    from flows.scan_and_trade import scan_and_trade

    # Arrange: the first order is placed but its answer times out, and the search that would find it
    # fails too: the venue gives up (TemporaryVenueError; it retries temporary errors itself, here 0 times).
    settings = _settings(hb, tmp_path, mode="live", confirm_live=True, max_retries=0)
    hb.state.fail_next("place", "timeout_after_place")
    hb.state.fail_next("search", "500_before")
    rt = _runtime(settings, store)
    # Act 1
    state = scan_and_trade(now=NOW, runtime=rt, return_state=True)
    # Assert 1: submit_orders ran once (no Prefect retry on top of the venue's own); the intent is stored.
    assert state.is_failed()
    submit = [t for t in task_runs(state.state_details.flow_run_id) if t.name.startswith("submit_orders")]
    assert len(submit) == 1 and submit[0].run_count == 1
    pending = [o for o in rt.account.book.orders.values() if o.status is OrderStatus.PENDING]
    assert pending and hb.state.place_requests == 1
    # Act 2: the next scan run (5 minutes later) manages first: the live driver resends the pending intent
    # (the venue searches before placing: found, not placed again); the entries not opened yet open now.
    again = scan_and_trade(now=NOW + timedelta(minutes=5), manage=True, runtime=rt, return_state=True)
    # Assert 2: every entry reached the venue exactly once.
    assert again.is_completed()
    entries = [o for o in rt.account.book.orders.values() if o.purpose == "entry"]
    buys = _orders(hb, "BUY")
    assert entries and len(buys) == len(entries) == hb.state.place_requests
    assert sorted(o.venue_order_id for o in entries) == sorted(b["order_id"] for b in buys)
    assert not [o for o in entries if o.status is OrderStatus.PENDING]


def test_live_scan_when_confirm_live_missing_then_refuses_and_sends_nothing(
    prefect_harness: str, hb: HummingbotTestServer, store: DuckDBStore, tmp_path: Path
) -> None:
    from flows.scan_and_trade import scan_and_trade

    s = _settings(hb, tmp_path)
    # Settings built around validation (the validator already refuses mode=live without confirmation).
    settings = s.model_copy(update={"execution": s.execution.model_copy(update={"mode": "live", "confirm_live": False})})
    rt = _runtime(settings, store)
    state = scan_and_trade(now=NOW, runtime=rt, return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match="live trading refused.*confirm_live=true"):
        state.result()
    assert hb.state.requests == [] and not dict(store.get_records("order"))
