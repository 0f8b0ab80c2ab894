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
from pydantic import SecretStr

from core.settings import Settings
from core.storage.duckdb_store import DuckDBStore
from tests.hummingbot_server import (
    TAKER_FEE,
    ExchangeState,
    HummingbotTestServer,
    settings_for,
)
from tests.prefect_support import task_runs
from tests.test_alerts import receiver  # noqa: F401 - the local Slack receiver fixture

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
def bars(real_candles) -> pl.DataFrame:
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


def _runtime(settings: Settings, store: DuckDBStore):
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
    hb.state.settle()  # the exchange's side of the last order lands after its acknowledgement
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


def test_live_scan_when_send_answer_lost_then_order_adopted_once_and_operator_alerted(
    prefect_harness: str, hb: HummingbotTestServer, store: DuckDBStore, tmp_path: Path, receiver  # noqa: F811
) -> None:
    from flows.scan_and_trade import scan_and_trade

    # Arrange: the deployed runtime's alerter posts to a local Slack receiver; the first order is placed
    # but its answer comes after the client's 1 s timeout.
    base = _settings(hb, tmp_path, mode="live", confirm_live=True)
    settings = base.model_copy(update={"alerts": base.alerts.model_copy(update={"slack_webhook_url": SecretStr(receiver.url)})})
    hb.state.fail_next("place", "timeout_after_place")
    rt = _runtime(settings, store)
    # Act
    state = scan_and_trade(now=NOW, runtime=rt, return_state=True)
    # Assert: the run completed, every entry is at the venue once, and the lost answer reached Slack
    # as a venue alert naming the adopted order.
    assert state.is_completed()
    entries = [o for o in rt.account.book.orders.values() if o.purpose == "entry"]
    assert entries and len(_orders(hb, "BUY")) == len(entries) == hb.state.place_requests
    venue_alerts = [p["body"]["text"] for p in receiver.posts if "[venue]" in p["body"]["text"]]
    first = hb.state.orders_at_venue()[0]["order_id"]
    assert len(venue_alerts) == 1 and "answer was lost" in venue_alerts[0] and first in venue_alerts[0]


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


def _btc_bars(start: datetime, closes: list[tuple[float, float, float, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "symbol": ["BTC"] * len(closes),
            "timeframe": ["1h"] * len(closes),
            "ts": [start + timedelta(hours=i) for i in range(len(closes))],
            "open": [c[0] for c in closes],
            "high": [c[1] for c in closes],
            "low": [c[2] for c in closes],
            "close": [c[3] for c in closes],
            "volume": [1.0] * len(closes),
        }
    )


def _open_btc_grid(hb: HummingbotTestServer, tmp_path: Path, bars: pl.DataFrame, t: datetime):  # noqa: ANN202
    """Live settings on `hb`, a store holding `bars`, and the $120 three-level BTC DCA grid signalled at
    `t` (60,000.04 / 59,400.06 / 58,800.09; TP 3 %, SL 8 %, 72 h hold, 24 h expiry) opened through the
    live account: (settings, store, runtime, account, position)."""
    from core.domain import OrderType, Scores, Signal, StrategyName, TradePlan
    from core.trading.entries import plan_entry

    s = settings_for(hb, mode="live", confirm_live=True)
    settings = s.model_copy(update={"data": s.data.model_copy(update={"var_dir": tmp_path, "symbols": ("BTC",)})})
    store = DuckDBStore(tmp_path / "store.duckdb")
    store.init_schema()
    store.upsert_candles(bars)
    rt = _runtime(settings, store)
    pf = rt.account
    plan = TradePlan(entry_type=OrderType.LIMIT, entry_prices=(60_000.04, 59_400.06, 58_800.09),
                     take_profit_pct=0.03, stop_loss_pct=0.08, max_hold=timedelta(hours=72),
                     entry_expiry=timedelta(hours=24))
    sig = Signal(symbol="BTC", strategy=StrategyName.DCA, timeframe="1h", ts=t, price=60_000.0, plan=plan)
    scores = Scores(confidence=0.7, take_profit_pct=0.03, stop_loss_pct=0.08, hold=timedelta(hours=72))
    return settings, store, rt, pf, pf.open(plan_entry(sig, scores, 120.0, settings))


def test_live_manage_positions_when_dca_grid_fills_in_part_expires_and_takes_profit_then_ledger_equals_venue(
    prefect_harness: str, tmp_path: Path
) -> None:
    """A $120 three-level DCA grid on Kraken's rules through the manage-positions flow in live mode:
    level 0 fills whole, level 1 fills 0.0004 BTC and is cancelled at expiry with level 2, the
    take-profit fires and one market SELL of the held 0.00106666 BTC closes the trade. Hand-checked."""
    from flows.manage_positions import manage_positions_flow

    t = datetime(2026, 4, 16, 19, tzinfo=UTC)  # the signal bar; orders rest from its close at 20:00
    clock = SimClock(t + timedelta(hours=1, minutes=2))
    quiet = [(60_000.0, 60_100.0, 59_500.0, 60_000.0)] * 26  # 19:00 .. next day 20:00: no exit, no level 2
    surge = [(60_000.0, 62_000.0, 59_900.0, 61_900.0)]  # 21:00 next day: high over the 3% take-profit
    with HummingbotTestServer(ExchangeState(marks={"BTC-USD": 60_000.0}, clock=clock)) as hb:
        settings, store, rt, pf, pos = _open_btc_grid(hb, tmp_path, _btc_bars(t, quiet + surge), t)
        e = [pf.book.orders[f"{pos.position_id}:e{i}"] for i in range(3)]
        # Kraken's grid: 40/60000.04, 40/59400.06, 40/58800.09 floored to 1e-8; buy prices down to 0.1.
        assert [(o.quantity, o.price) for o in e] == [(0.00066666, 60_000.0), (0.00067339, 59_400.0),
                                                      (0.00068027, 58_800.0)]
        hb.state.settle()  # level 0 crosses the 60,000 mark as the exchange creates it
        hb.state.fill(e[1].venue_order_id, 0.0004)  # level 1 fills in part while resting
        first = manage_positions_flow(now=t + timedelta(hours=2), runtime=rt)
        # Both are booked at once: level 0 whole, level 1's 0.0004 BTC while its order works for the rest.
        qty, cost = 0.00066666 + 0.0004, 60_000.0 * 0.00066666 + 59_400.0 * 0.0004  # 0.00106666, 63.7596
        assert first.fills == 2 and pos.quantity == pytest.approx(qty, abs=1e-12)
        assert pos.avg_price == pytest.approx(cost / qty) and pos.entry_levels[1].resting
        assert pf.book.cash == pytest.approx(settings.risk.capital - cost - cost * 0.0025)  # maker fee 0.25%
        # Next day: the 20:00 bar closes at the 24 h expiry: levels 1 and 2 are cancelled at the venue;
        # level 1 keeps the 0.0004 BTC booked before, nothing is booked twice.
        clock.at = t + timedelta(hours=26, minutes=1)
        second = manage_positions_flow(now=t + timedelta(hours=26), runtime=rt)
        assert second.fills == 0 and second.exits == []
        assert {hb.state.orders[o.venue_order_id]["status"] for o in e[1:]} == {"CANCELLED"}
        assert pos.quantity == pytest.approx(qty, abs=1e-12) and pos.avg_price == pytest.approx(cost / qty)
        assert not any(lv.resting for lv in pos.entry_levels)
        # The 21:00 bar reaches the take-profit (avg 59,775.0 * 1.03 = 61,568.2): a market SELL.
        hb.state.marks["BTC-USD"] = 61_900.0
        clock.at = t + timedelta(hours=28, minutes=1)
        third = manage_positions_flow(now=t + timedelta(hours=28), runtime=rt)
        assert third.exits == ["take_profit @ 61900"]
        (trade,) = pf.book.trades.values()
        [sell] = [o for o in hb.state.orders_at_venue() if o["trade_type"] == "SELL"]
        assert sell["amount"] == pytest.approx(qty, abs=1e-12) and sell["order_type"] == "MARKET"
        # 0.00106666 * 61,900 = 66.026254; fees 63.7596 * 0.25% = 0.159399 and 66.026254 * 0.4% = 0.264105016
        assert trade.fees == pytest.approx(0.159399 + 0.264105016, abs=1e-9)
        assert trade.net_pnl == pytest.approx(66.026254 - 63.7596 - 0.159399 - 0.264105016, abs=1e-9)
        assert pf.book.cash == pytest.approx(settings.risk.capital + hb.state.balances["USD"] - 10_000.0)
        assert hb.state.balances.get("BTC", 0.0) == pytest.approx(0.0, abs=1e-12)
        assert len(hb.state.orders_at_venue()) == 4  # three levels and one SELL: nothing doubled
        store.close()


def test_live_manage_positions_when_market_falls_through_grid_and_stop_then_sold_at_venue_and_hand_checked(
    prefect_harness: str, tmp_path: Path
) -> None:
    """The same $120 Kraken grid through the manage-positions flow in live mode: level 0 fills as it is
    created; the market then falls to 54,100, filling levels 1 and 2 at their limits, and the 21:00 bar's
    low (54,000) goes through the stop (8% under the average): one market SELL of everything held."""
    from core.domain import ExitReason
    from flows.manage_positions import manage_positions_flow

    t = datetime(2026, 4, 16, 19, tzinfo=UTC)
    clock = SimClock(t + timedelta(hours=1, minutes=2))
    bars = [(60_000.0, 60_100.0, 59_500.0, 60_000.0)] * 2 + [(60_000.0, 60_000.0, 54_000.0, 54_100.0)]  # 19-21h
    with HummingbotTestServer(ExchangeState(marks={"BTC-USD": 60_000.0}, clock=clock)) as hb:
        settings, store, rt, pf, pos = _open_btc_grid(hb, tmp_path, _btc_bars(t, bars), t)
        hb.state.settle()  # level 0 crosses the 60,000 mark as the exchange creates it
        first = manage_positions_flow(now=t + timedelta(hours=2), runtime=rt)
        assert first.fills == 1 and first.exits == [] and pos.quantity == 0.00066666
        # The fall: levels 1 and 2 fill at the venue; the 21:00 bar's low is under the stop.
        clock.at = t + timedelta(hours=3, minutes=1)
        hb.state.set_mark("BTC-USD", 54_100.0)
        second = manage_positions_flow(now=t + timedelta(hours=3), runtime=rt)
        assert second.fills == 2 and second.exits == ["stop_loss @ 54100"]
        # Hand-checked: held 0.00066666 + 0.00067339 + 0.00068027 = 0.00202032 BTC for
        # 39.9996 + 39.999366 + 39.999876 = 119.998842 USD (avg 59,396.15, stop 54,644.46 > low 54,000);
        # sold at 54,100 = 109.299312; fees 119.998842 * 0.25% + 109.299312 * 0.4% = 0.737194353.
        (trade,) = pf.book.trades.values()
        [sell] = [o for o in hb.state.orders_at_venue() if o["trade_type"] == "SELL"]
        assert sell["amount"] == pytest.approx(0.00202032, abs=1e-12) and sell["order_type"] == "MARKET"
        assert trade.exit_reason is ExitReason.STOP_LOSS and trade.exit_price == 54_100.0
        assert trade.quantity == pytest.approx(0.00202032, abs=1e-12)
        assert trade.fees == pytest.approx(0.737194353, abs=1e-9)
        assert trade.net_pnl == pytest.approx(109.299312 - 119.998842 - 0.737194353, abs=1e-9)  # -11.436724353
        assert pf.book.cash == pytest.approx(settings.risk.capital + hb.state.balances["USD"] - 10_000.0)
        assert hb.state.balances.get("BTC", 0.0) == pytest.approx(0.0, abs=1e-12)
        assert len(hb.state.orders_at_venue()) == 4  # three levels and one SELL: nothing doubled
        store.close()
