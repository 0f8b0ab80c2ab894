"""core.trading.scan.plan_scan (the one scan function) and the book it feeds: which signals are decided,
the regime change it reports, the orders built once and placed as planned, the one valuation."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from core.domain import Regime, StrategyName
from core.risk import PortfolioView
from core.scoring import RuleOnlyScorer
from core.settings import load_settings
from core.storage.duckdb_store import DuckDBStore
from core.trading.account import paper_account
from core.trading.scan import plan_scan
from core.trading.valuation import marked, risk_view
from tests.trading_helpers import TS, make_signal

S = load_settings()
CLOSE = TS  # the signal bar's close (make_signal puts the signal on the bar that closes at TS)
NORMAL = (Regime.NORMAL, "no breaker condition holds")


def _plan(signals, now=CLOSE, decided=(), regime=NORMAL, previous=None, view=None):
    return plan_scan(signals, view or PortfolioView(S.risk.capital), decided, regime, previous, RuleOnlyScorer(S), S, now)


def test_plan_scan_when_bar_not_closed_or_signal_decided_then_left_out() -> None:
    btc, eth = make_signal("BTC", StrategyName.DCA, S), make_signal("ETH", StrategyName.SWING, S)
    assert _plan([btc, eth], now=CLOSE - timedelta(minutes=5)).signals == []  # the bar is still open
    plan = _plan([btc, eth], decided={btc.signal_id})
    assert [s.signal_id for s in plan.signals] == [eth.signal_id]
    assert [d.signal_id for d in plan.decisions] == [eth.signal_id] and len(plan.scores) == 1


def test_plan_scan_when_regime_differs_from_stored_then_changed_else_kept_since_it_began() -> None:
    sig = [make_signal("BTC", StrategyName.DCA, S)]
    first = _plan(sig, previous=None)
    assert first.regime_changed and first.previous_regime is None and first.regime.since == CLOSE
    same = _plan(sig, now=CLOSE + timedelta(hours=1), previous=first.regime)
    assert not same.regime_changed and same.regime.since == CLOSE  # unchanged: when it began is kept
    panic = _plan(sig, regime=(Regime.PANIC, "BTC 1h return -3.5%"), previous=first.regime)
    assert panic.regime_changed and panic.previous_regime is Regime.NORMAL
    assert [d.reason.value for d in panic.decisions] == ["regime_no_entries"] and panic.entries == []
    assert panic.skips_by_code == {"regime_no_entries": 1}


def test_plan_scan_when_entry_taken_then_orders_built_once_and_the_account_places_exactly_those(tmp_path: Path) -> None:
    plan = _plan([make_signal("BTC", StrategyName.DCA, S), make_signal("SOL", StrategyName.SWING, S)])
    assert [d.taken for d in plan.decisions] == [True, True]
    planned = {o.client_order_id: o for e in plan.entries for o in e.orders}
    assert len(planned) == S.strategy.dca.grid_levels + 1  # the DCA grid and one market buy
    assert {r["client_order_id"] for r in plan.order_rows()} == set(planned)  # what the artifact shows
    store = DuckDBStore(tmp_path / "s.duckdb")
    store.init_schema()
    account = paper_account(store, S)
    opened = account.execute(plan.skipped, plan.entries)
    assert opened == [e.position_id for e in plan.entries]
    assert {cid: o.model_copy(update={"status": planned[cid].status, "venue_order_id": None})
            for cid, o in account.book.orders.items()} == planned  # the same orders, acknowledged by the venue
    assert account.book.positions[plan.entries[0].position_id] is plan.entries[0].position
    # A second scan of the same bar decides nothing again (the book knows its decisions).
    again = _plan([make_signal("BTC", StrategyName.DCA, S)], decided=account.book.decisions)
    assert again.decisions == [] and again.entries == []
    store.close()


def test_valuation_when_positions_filled_and_resting_then_book_view_and_engine_view_agree(tmp_path: Path) -> None:
    from core.positions import Bar

    plan = _plan([make_signal("BTC", StrategyName.DCA, S)])
    store = DuckDBStore(tmp_path / "v.duckdb")
    store.init_schema()
    account = paper_account(store, S)
    account.execute(plan.skipped, plan.entries)
    pos = plan.entries[0].position
    low = min(lv.price for lv in pos.entry_levels[:2])  # the bar reaches two grid levels
    account.on_bar("BTC", Bar(CLOSE, pos.entry_levels[0].price, pos.entry_levels[0].price * 1.001, low * 0.9999, low))
    assert 0 < pos.quantity and pos.resting_levels == len(pos.entry_levels) - 2
    marks = {"BTC": low * 1.01}
    view, book = risk_view(account.book.cash, account.book.open_positions(), marks), account.book.view(marks)
    assert view == book
    equity, notional = marked(account.book.cash, account.book.open_positions(), marks)
    assert book.equity == pytest.approx(equity) == pytest.approx(account.book.cash + pos.quantity * marks["BTC"])
    assert notional == pytest.approx(pos.quantity * marks["BTC"] + pos.resting_notional)
    assert book.open_notional == pytest.approx(notional)
    store.close()


def test_batch_scored_when_same_or_equal_signals_asked_then_their_own_scores() -> None:
    from core.domain import Scores
    from core.scoring import BatchScored

    a, b = make_signal("BTC", StrategyName.DCA, S), make_signal("ETH", StrategyName.SWING, S)
    sa, sb = (Scores(confidence=c, take_profit_pct=0.05, stop_loss_pct=0.03) for c in (0.61, 0.77))
    batch = BatchScored([a, b], [sa, sb])
    assert batch.score([b, a]) == [sb, sa]  # the very objects scored in the batch
    assert batch.score([make_signal("ETH", StrategyName.SWING, S)]) == [sb]  # an equal signal built again
    with pytest.raises(ValueError, match="1 scores for 2 signals"):
        BatchScored([a, b], [sa])


def test_account_open_when_paper_rules_set_then_orders_quantized_and_below_minimum_skipped(tmp_path: Path) -> None:
    """The paper venue's trading rules (Kraken-like BTC: lot 1e-8, tick 0.1; SOL: a 1,000 SOL minimum)
    shape what the book stores and sends: BTC's grid is rounded (buy prices down, amounts down, the
    position's levels equal to the orders); SOL's market buy is below the minimum, so nothing opens and
    the decision is stored as skipped with its reason code."""
    from core.domain import ReasonCode
    from core.settings import PaperTradingRule

    rules = {
        "BTC": PaperTradingRule(min_order_size=0.00005, min_price_increment=0.1, min_base_amount_increment=1e-8),
        "SOL": PaperTradingRule(min_order_size=1000.0, min_price_increment=0.01, min_base_amount_increment=0.01),
    }
    settings = S.model_copy(update={"execution": S.execution.model_copy(update={"paper_trading_rules": rules})})
    plan = _plan([make_signal("BTC", StrategyName.DCA, S), make_signal("SOL", StrategyName.SWING, S)])
    store = DuckDBStore(tmp_path / "s.duckdb")
    store.init_schema()
    account = paper_account(store, settings)
    opened = account.execute(plan.skipped, plan.entries)
    by_symbol = {e.position.symbol: e for e in plan.entries}
    btc, sol = by_symbol["BTC"], by_symbol["SOL"]
    assert opened == [btc.position_id]
    for lv, raw in zip(btc.position.entry_levels, btc.orders, strict=True):
        o = account.book.orders[lv.client_order_id]
        assert o.quantity == lv.quantity <= raw.quantity and raw.quantity - o.quantity < 1e-8
        assert round(o.quantity * 1e8) == pytest.approx(o.quantity * 1e8, abs=1e-6)  # on the 1e-8 lot grid
        assert o.price == lv.price <= raw.price and raw.price - o.price < 0.1  # a buy limit rounds down
        assert round(o.price * 10) == pytest.approx(o.price * 10, abs=1e-6)
    assert sol.position_id not in account.book.positions
    assert not [cid for cid in account.book.orders if cid.startswith(sol.position_id)]
    skipped = account.book.decisions[sol.decision.signal_id]
    assert not skipped.taken and skipped.reason is ReasonCode.BELOW_MIN_AMOUNT and "below the minimum" in skipped.detail
    store.close()
