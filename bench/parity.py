"""Parity, measured: the main job's Prefect paper replay (prepare-session, then one scan-and-trade flow
run per simulated hour that ingests the bars that closed, manages the positions on them and scans)
against the backtest engine over the same window, from the same empty book, with the same scorer
(rule-only), reading the same stored bars. Used by tests/test_parity.py (a short window, every
decision and fill must be identical) and bench/bench_parity.py (a week of the 24 monitored coins).

Decisions are compared on (signal id, symbol, strategy, taken, reason code) exactly and the notional
to a relative 1e-9; fills on (client order id, side, time) exactly and price, quantity and fee to a
relative 1e-9. The tolerance is floating-point rounding only: the scan detects on its window of the last
bars, the engine once over the whole history, and rolling-window features (e.g. the 24h volatility that
sizing uses) accumulate their sums from different first bars, so they agree to ~1e-15, not to the bit.
The engine marks positions still open when the window's data ends out at their last close
(`end_of_data`); a paper account keeps them open, so those exits are left out of the comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import polars as pl

from core.settings import Settings

DECISION_KEY = ("signal_id", "symbol", "strategy", "taken", "reason", "notional")
FILL_KEY = ("client_order_id", "side", "ts", "price", "quantity", "fee")
RTOL = 1e-9


def _matching(a: pl.DataFrame, b: pl.DataFrame, exact: list[str], close: list[str]) -> int:
    """Rows of `a` with a row of `b` equal on `exact` and within RTOL on `close`."""
    j = a.join(b, on=exact, how="inner", nulls_equal=True, suffix="_b")
    ok = pl.lit(True)
    for c in close:
        ok = ok & ((pl.col(c) - pl.col(f"{c}_b")).abs() <= RTOL * pl.max_horizontal(pl.col(c).abs(), pl.col(f"{c}_b").abs()))
    return j.filter(ok).height


@dataclass(frozen=True)
class Parity:
    paper_decisions: pl.DataFrame
    engine_decisions: pl.DataFrame
    paper_fills: pl.DataFrame
    engine_fills: pl.DataFrame
    scan_runs: int

    @property
    def identical_decisions(self) -> int:
        exact = ["signal_id", "symbol", "strategy", "taken", "reason"]
        return _matching(self.paper_decisions, self.engine_decisions, exact, ["notional"])

    @property
    def decision_share(self) -> float:
        """Identical decisions over all decisions made by either side (1.0: every one identical)."""
        total = max(self.paper_decisions.height, self.engine_decisions.height)
        return self.identical_decisions / total if total else 1.0

    @property
    def identical_fills(self) -> int:
        return _matching(self.paper_fills, self.engine_fills, ["client_order_id", "side", "ts"], ["price", "quantity", "fee"])

    @property
    def fill_share(self) -> float:
        total = max(self.paper_fills.height, self.engine_fills.height)
        return self.identical_fills / total if total else 1.0


def _paper_frames(account: Any) -> tuple[pl.DataFrame, pl.DataFrame]:
    book = account.book
    decisions = pl.DataFrame(
        [(d.signal_id, d.symbol, d.strategy.value, d.taken, d.reason.value, d.notional) for d in book.decisions.values()],
        schema=list(DECISION_KEY), orient="row",
    )
    fills = pl.DataFrame(
        [(f.client_order_id, f.side.value, f.ts, f.price, f.quantity, f.fee) for f in book.fills.values()],
        schema={"client_order_id": pl.Utf8, "side": pl.Utf8, "ts": pl.Datetime("us", "UTC"), "price": pl.Float64,
                "quantity": pl.Float64, "fee": pl.Float64}, orient="row",
    )
    return decisions.sort("signal_id"), fills.sort("client_order_id")


def paper_vs_backtest(settings: Settings, end: datetime, days: int) -> Parity:
    """Run both over [end - days, end) on a fresh store under settings.data.var_dir (rule-only: no
    training; ml.train_end should lie at or after the replay start so the import covers the warm-up)."""
    from core.backtest.engine import run_backtest
    from core.backtest.session import load_inputs, store_reader
    from core.scoring import RuleOnlyScorer
    from flows.offline_session import prepare_session, replay
    from tasks.runtime import open_runtime

    symbols = list(settings.data.symbols)
    with open_runtime(settings, scorer=RuleOnlyScorer(settings)) as rt:
        plan = prepare_session(days, symbols, end, train="never", runtime=rt)
        steps, _ = replay(rt, plan, timedelta(hours=1))
        paper_decisions, paper_fills = _paper_frames(rt.account)
        tf = settings.data.detection_timeframe
        inputs = load_inputs(store_reader(rt.store), settings, symbols, tf, plan.start, plan.stop)
    result = run_backtest(inputs.bars, settings, start=plan.start, end=plan.stop, market_bars=inputs.market_bars)
    marked_out = result.trades.filter(pl.col("exit_reason") == "end_of_data").get_column("position_id").to_list()
    engine_fills = (
        result.fills.filter(~(pl.col("position_id").is_in(marked_out) & (pl.col("side") == "sell")))
        .select(FILL_KEY)
        .sort("client_order_id")
    )
    engine_decisions = result.decisions.select(DECISION_KEY).sort("signal_id")
    return Parity(paper_decisions, engine_decisions, paper_fills, engine_fills, steps)
