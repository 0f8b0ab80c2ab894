"""Portfolio ledger on the real DuckDB store: accounting invariants at every bar, agreement with the trade
simulator, reload equality, idempotent opens, atomic journal events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from core.domain import (
    Decision,
    ExitReason,
    OrderType,
    ReasonCode,
    Scores,
    Signal,
    StrategyName,
    TradePlan,
)
from core.paper_session import Entry, run_session
from core.positions import Bar
from core.settings import load_settings
from core.simulator import simulate_trade
from core.storage.duckdb_store import DuckDBStore
from core.trading.account import Account, paper_account
from core.trading.entries import plan_entry
from core.trading.journal import JOURNAL
from core.trading.simulated import SimulatedDriver
from core.venues.paper import PaperVenue

S = load_settings()
START, END = datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def bars() -> pl.DataFrame:
    return (
        pl.scan_parquet(S.data.data_dir / "ohlcv_1h.parquet")
        .filter(pl.col("symbol").is_in(["BTC", "ETH", "SOL"]), pl.col("ts") >= START, pl.col("ts") < END)
        .with_columns(pl.col("ts").dt.cast_time_unit("us"), pl.lit("1h").alias("timeframe"))
        .sort("symbol", "ts")
        .collect()
    )


@pytest.fixture
def store(tmp_path):
    s = DuckDBStore(tmp_path / "ledger.duckdb")
    s.init_schema()
    yield s
    s.close()


def close_at(bars: pl.DataFrame, symbol: str, ts: datetime) -> float:
    return bars.filter(pl.col("symbol") == symbol, pl.col("ts") == ts).get_column("close")[0]


def dca(symbol: str, ts: datetime, price: float) -> Signal:
    plan = TradePlan(entry_type=OrderType.LIMIT, entry_prices=tuple(price * (1 - k * 0.01) for k in range(5)),
                     take_profit_pct=0.03, stop_loss_pct=0.04, max_hold=timedelta(hours=72),
                     entry_expiry=timedelta(hours=24))
    return Signal(symbol=symbol, strategy=StrategyName.DCA, timeframe="1h", ts=ts, price=price, plan=plan)


def swing(symbol: str, ts: datetime, price: float) -> Signal:
    plan = TradePlan(entry_type=OrderType.MARKET, entry_prices=(price,), take_profit_pct=0.05, stop_loss_pct=0.03,
                     trailing_stop_pct=0.04, max_hold=timedelta(hours=48))
    return Signal(symbol=symbol, strategy=StrategyName.SWING, timeframe="1h", ts=ts, price=price, plan=plan)


def scores(sig: Signal) -> Scores:
    return Scores(confidence=0.7, take_profit_pct=sig.plan.take_profit_pct, stop_loss_pct=sig.plan.stop_loss_pct,
                  hold=sig.plan.max_hold)


def entries(bars: pl.DataFrame) -> list[Entry]:
    picks = [("BTC", datetime(2024, 1, 3, 12, tzinfo=UTC), dca), ("ETH", datetime(2024, 1, 2, 20, tzinfo=UTC), swing),
             ("SOL", datetime(2024, 1, 4, 9, tzinfo=UTC), swing), ("ETH", datetime(2024, 1, 8, 3, tzinfo=UTC), dca),
             ("BTC", datetime(2024, 1, 9, 0, tzinfo=UTC), swing), ("SOL", datetime(2024, 1, 8, 0, tzinfo=UTC), dca)]
    return [Entry(s := make(sym, ts, close_at(bars, sym, ts)), scores(s), 150.0) for sym, ts, make in picks]


def check_invariants(pf: Account) -> None:
    eq = pf.book.equity()
    assert eq == pytest.approx(pf.book.cash + sum(p.quantity * pf.book.marks[p.symbol] for p in pf.book.open_positions()))
    assert eq == pytest.approx(pf.book.capital + pf.book.realised_pnl + pf.book.unrealised_pnl())
    assert pf.book.fees_paid == pytest.approx(sum(f.fee for f in pf.book.fills.values()))
    assert pf.book.realised_pnl == pytest.approx(sum(t.net_pnl for t in pf.book.trades.values()))
    assert len(pf.book.fills) == len({f.client_order_id for f in pf.book.fills.values()})  # one fill per order


def test_portfolio_when_session_runs_then_invariants_hold_at_every_step(store, bars):
    pf = paper_account(store, S)
    run_session(pf, bars, entries(bars), on_step=lambda ts: check_invariants(pf))
    assert len(pf.book.trades) >= 4
    assert pf.book.cash == pytest.approx(1000.0 + pf.book.realised_pnl - sum(p.cost + p.entry_fees for p in pf.book.open_positions()))


def test_portfolio_when_trades_close_then_they_match_the_trade_simulator(store, bars):
    pf = paper_account(store, S)
    es = entries(bars)
    run_session(pf, bars, es)
    compared = 0
    for e in es:
        trade = pf.book.trades.get(f"pos:{e.signal.signal_id}")
        if trade is None:
            continue
        out = simulate_trade(e.signal, e.scores, bars, S, notional=e.notional)
        assert trade.exit_reason is out.exit_reason and trade.exit_ts == out.exit_ts
        assert trade.entry_price == pytest.approx(out.entry_price)
        assert trade.exit_price == pytest.approx(out.exit_price)
        assert trade.return_pct == pytest.approx(out.net_return)
        compared += 1
    assert compared >= 4
    assert {t.exit_reason for t in pf.book.trades.values()} >= {ExitReason.TAKE_PROFIT}


def test_portfolio_when_reloaded_mid_session_then_same_state_and_same_ending(store, bars, tmp_path):
    cut = datetime(2024, 1, 5, 7, tzinfo=UTC)
    es = entries(bars)
    pf = paper_account(store, S)
    run_session(pf, bars.filter(pl.col("ts") <= cut), es)
    again = paper_account(store, S, load=True)
    assert again.book.orders == pf.book.orders and again.book.fills == pf.book.fills and again.book.trades == pf.book.trades
    assert again.book.cash == pytest.approx(pf.book.cash) and again.venue.open_orders() == pf.venue.open_orders()
    run_session(again, bars.filter(pl.col("ts") <= cut), es)  # quiet bars are replayed, not stored
    assert again.book.positions == pf.book.positions and again.book.orders == pf.book.orders
    run_session(again, bars, es)  # replays the start (nothing twice) and carries on
    ref_store = DuckDBStore(tmp_path / "ref.duckdb")
    ref = run_session(paper_account(ref_store, S), bars, es)
    assert again.book.trades == ref.book.trades and again.book.cash == pytest.approx(ref.book.cash)
    assert again.book.orders == ref.book.orders
    ref_store.close()


def test_open_when_same_signal_twice_then_one_position_and_no_doubled_orders(store, bars):
    pf = paper_account(store, S)
    e = entries(bars)[0]
    a = pf.open(plan_entry(e.signal, e.scores, e.notional, S))
    b = pf.open(plan_entry(e.signal, e.scores, 999.0, S))
    assert a is b and len(pf.book.positions) == 1
    assert len(pf.book.orders) == 5 and len(pf.venue.open_orders()) == 5
    assert sorted(k for k, _ in store.get_records("order")) == sorted(pf.book.orders)


def test_commit_when_event_written_then_one_journal_record_holds_all_of_it(store, bars):
    pf = paper_account(store, S)
    e = entries(bars)[0]
    decision = Decision(signal_id=e.signal.signal_id, symbol="BTC", strategy=StrategyName.DCA, ts=e.signal.ts,
                        taken=True, reason=ReasonCode.TAKEN, notional=e.notional)
    pf.open(plan_entry(e.signal, e.scores, e.notional, S, decision))
    journal = store.get_records(JOURNAL)
    opened = [p for _, p in journal if p["event"] == "open"]
    assert len(opened) == 1
    assert len(opened[0]["orders"]) == 5 and len(opened[0]["positions"]) == 1 and len(opened[0]["decisions"]) == 1
    assert [o["status"] for o in opened[0]["orders"]] == ["pending"] * 5  # intent stored before sending
    assert [k for k, _ in store.get_records("decision")] == [e.signal.signal_id]


def test_on_bar_when_bar_replayed_then_nothing_applied_twice(store, bars):
    pf = paper_account(store, S)
    e = entries(bars)[1]  # ETH swing: market entry on the next bar
    pf.open(plan_entry(e.signal, e.scores, e.notional, S))
    r = bars.filter(pl.col("symbol") == "ETH", pl.col("ts") == e.signal.ts + timedelta(hours=1)).row(0, named=True)
    b = Bar(r["ts"], r["open"], r["high"], r["low"], r["close"])
    assert len(pf.on_bar("ETH", b)) == 1
    cash, n = pf.book.cash, len(store.get_records(JOURNAL))
    assert pf.on_bar("ETH", b) == [] and pf.book.cash == cash and len(store.get_records(JOURNAL)) == n


class _CrashingVenue(PaperVenue):
    """Dies (like a killed process) right after the intent was stored, before any order reached it."""

    def submit(self, order):  # type: ignore[override]
        raise KeyboardInterrupt("killed before sending")


def test_load_when_intents_stored_but_never_sent_then_sent_once_on_restart(store, bars):
    e = entries(bars)[0]
    with pytest.raises(KeyboardInterrupt):
        Account(store, S, SimulatedDriver(_CrashingVenue(S), S)).open(plan_entry(e.signal, e.scores, e.notional, S))
    assert {p["status"] for _, p in store.get_records("order")} == {"pending"}
    venue = PaperVenue(S)
    pf = Account.load(store, S, SimulatedDriver(venue, S))
    assert len(venue.open_orders()) == 5 and {o.status.value for o in pf.book.orders.values()} == {"open"}
    again = paper_account(store, S, load=True)  # a second restart resends nothing new
    assert again.book.orders == pf.book.orders and len(again.venue.open_orders()) == 5
    assert sum(1 for _, p in store.get_records(JOURNAL) if p["event"] == "resubmitted") == 1
