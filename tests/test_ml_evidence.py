"""The evidence report (models.evidence): BTC at the same exposure hand-checked on a tiny book, the verdict
rule, the within-strategy AUC, and the whole report on a short real walk-forward logged to a real MLflow
store."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from mlflow import MlflowClient

from core.backtest.buy_and_hold import buy_and_hold_same_exposure, exposure_from_equity
from core.backtest.engine import run_backtest
from core.backtest.metrics import summary
from core.scoring import RuleOnlyScorer
from core.settings import load_settings
from models.evidence import (
    BOOKS,
    COMBINED,
    EDGE,
    NAMES,
    NO_EDGE,
    evidence_report,
    log_evidence,
    markdown,
    markdown_books,
    replace_headline,
    verdict,
)
from models.oos import OneStrategyScorer
from models.tracking import MlflowTarget
from models.uncertainty import auc, stratified_auc

T0 = datetime(2024, 1, 1, tzinfo=UTC)
H = timedelta(hours=1)


def _btc(opens: list[float], closes: list[float]) -> pl.DataFrame:
    n = len(closes)
    return pl.DataFrame(
        {
            "symbol": ["BTC"] * n,
            "timeframe": ["1h"] * n,
            "ts": [T0 + i * H for i in range(n)],
            "open": opens,
            "high": closes,
            "low": closes,
            "close": closes,
            "volume": [1.0] * n,
        },
    ).with_columns(pl.col("ts").dt.cast_time_unit("us"))


def _book(rows: list[tuple[datetime, float, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema={"ts": pl.Datetime("us", "UTC"), "cash": pl.Float64, "equity": pl.Float64}, orient="row"
    ).with_columns(open_notional=pl.col("equity") - pl.col("cash"))


def test_same_exposure_when_tiny_book_then_equals_hand_arithmetic() -> None:
    # Arrange: BTC 100 -> 110 -> 99 -> 99 -> 108.9 (bar returns +10%, -10%, 0, +10%). The book buys half its
    # equity in bar 0 (cash 1000 -> 500 at the bar-0 close), is 50% invested through bar 1, sells in bar 2
    # (cash back to 1010 at the bar-2 close) and is flat after: the engine records no step in bar 3.
    bars = _btc([100.0, 110.0, 99.0, 99.0], [110.0, 99.0, 99.0, 108.9])
    book = _book([(T0 + H, 500.0, 1000.0), (T0 + 2 * H, 500.0, 990.0), (T0 + 3 * H, 1010.0, 1010.0)])
    settings = load_settings()
    c = settings.execution.taker_fee + settings.execution.slippage
    # Hand: w = 0, 0.5, 500/990, 0 (invested share at the close before each bar);
    # u = 500/1000, 0, 510/990, 0 (|cash change| in the bar over the equity before it).
    w = [0.0, 0.5, 490.0 / 990.0, 0.0]
    r = [0.10, -0.10, 0.0, 0.10]
    u = [0.5, 0.0, 510.0 / 990.0, 0.0]
    path, e = [], 1000.0
    for wi, ri, ui in zip(w, r, u, strict=True):
        e *= (1 + wi * ri) * (1 - c * ui)
        path.append(e)
    # Act
    res = buy_and_hold_same_exposure(bars, settings, T0, T0 + 4 * H, book, capital=1000.0)
    bare = buy_and_hold_same_exposure(bars, settings, T0, T0 + 4 * H, book, capital=1000.0, costs=False)
    # Assert
    assert res.equity["equity"].to_list() == pytest.approx(path, rel=1e-12)
    assert res.equity["ts"].to_list() == [T0 + (i + 1) * H for i in range(4)]
    assert res.stats["total_return"] == pytest.approx(path[-1] / 1000.0 - 1, rel=1e-12)
    assert res.stats["exposure"] == pytest.approx(sum(w) / 4, rel=1e-12)
    assert res.stats["turnover"] == pytest.approx(sum(u), rel=1e-12)
    assert bare.stats["final_equity"] == pytest.approx(1000.0 * 0.95, rel=1e-12)  # only bar 1's -10% at 50%
    assert res.stats["max_drawdown"] == pytest.approx(1 - min(path) / 1000.0, rel=1e-12)


def test_exposure_from_equity_when_resting_orders_then_they_are_not_exposure() -> None:
    # A DCA grid's resting limit orders count in open_notional but hold no coin: cash = equity, weight 0.
    book = _book([(T0 + H, 1000.0, 1000.0), (T0 + 2 * H, 600.0, 1000.0)]).with_columns(open_notional=pl.lit(400.0))
    assert exposure_from_equity(book)["weight"].to_list() == [0.0, 0.4]


@pytest.mark.parametrize(
    ("auc_low", "ml_low", "rule", "btc", "expected"),
    [
        (0.51, 0.20, 0.10, 0.00, EDGE),
        (0.50, 0.20, 0.10, 0.00, NO_EDGE),  # AUC interval touches 0.5: no skill shown
        (0.51, 0.10, 0.10, 0.00, NO_EDGE),  # ML lower bound only equal to rule-only's Sharpe
        (0.51, -0.50, -2.00, -0.40, NO_EDGE),  # beats a losing rule book, not BTC at its exposure
        (0.51, math.nan, -2.00, -0.40, NO_EDGE),  # no ML trades: no Sharpe, no evidence
        (0.55, 0.30, math.nan, 0.10, NO_EDGE),
    ],
)
def test_verdict_when_bounds_given_then_edge_only_if_all_clear(auc_low, ml_low, rule, btc, expected) -> None:
    assert verdict(auc_low, ml_low, rule, btc) == expected


def test_stratified_auc_when_groups_differ_in_base_rate_then_only_within_group_ranking_counts() -> None:
    # Arrange: inside each group p is noise (AUC 0.5 by construction: ties), but group b has a higher base
    # rate and higher p, so the pooled AUC rewards telling the groups apart.
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    p = np.array([0.2, 0.2, 0.2, 0.2, 0.7, 0.7, 0.7, 0.7])
    g = np.array(["a"] * 4 + ["b"] * 4)
    assert auc(y, p) > 0.7
    assert stratified_auc(y, p, g) == pytest.approx(0.5)


def test_evidence_report_when_short_real_walk_forward_then_books_agree_with_engine_and_log_to_mlflow(
    real_candles, tmp_path
) -> None:
    # Arrange: 4 coins (BTC among them), 2022-2023 1h; a fresh sqlite MLflow store.
    bars = real_candles("1h", ["BTC", "ETH", "SOL", "DOGE"], datetime(2022, 1, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))
    settings = load_settings(ml={"walk_forward_folds": 3})
    # Act
    report = evidence_report(bars, settings, ("dca", "swing"), n_boot=100)
    target = MlflowTarget(f"sqlite:///{tmp_path}/mlflow.db", f"sqlite:///{tmp_path}/mlflow.db")
    run_id = log_evidence(report, target)
    # Assert: one row per strategy plus the combined book, every book present.
    assert [r.strategy for r in report.rows] == ["dca", "swing", COMBINED]
    assert report.n_trials == 6 and "no tuning" in report.n_trials_source
    for r in report.rows:
        assert set(r.books) == set(BOOKS) and r.verdict in (EDGE, NO_EDGE)
        assert r.auc.low <= r.auc.point <= r.auc.high and r.events > 100
        # The benchmark holds BTC with the same time-weighted exposure as the book it follows.
        assert r.books["btc_ml_exposure"].exposure == r.books["ml"].exposure
        assert r.books["btc_rule_exposure"].exposure == r.books["rule"].exposure > 0
        # Paying the followed book's turnover can only cost: same path, lower end.
        paying, bare = r.books["btc_rule_exposure_turnover"], r.books["btc_rule_exposure"]
        assert paying.turnover == bare.turnover > 0 and paying.total_return < bare.total_return
    swing, comb = report.rows[1], report.rows[2]
    assert comb.events < report.rows[0].events + swing.events  # only events inside the common window
    assert comb.window[0] >= max(report.rows[0].window[0], swing.window[0])
    # The rule-only book is the engine's: same total return and Sharpe as summary() on the same window.
    start, end = (datetime.fromisoformat(x) for x in swing.window)
    res = run_backtest(bars, settings, start=start, end=end, scorer=OneStrategyScorer(RuleOnlyScorer(settings), "swing"))
    stats = summary(res.trades, res.equity, settings.risk.capital, start, end)
    assert swing.books["rule"].trades == stats["trades"]
    assert swing.books["rule"].total_return == pytest.approx(stats["total_return"], rel=1e-9)
    assert swing.books["rule"].sharpe.point == pytest.approx(stats["sharpe"], rel=1e-9)
    # The markdown has the verdict of every row; the MLflow run has both artifacts and the verdict tags.
    md = markdown(report)
    assert all(f"| {NAMES[r.strategy]} |" in md and f"**{r.verdict}**" in md for r in report.rows)
    assert markdown_books(report).count("\n") == 2 + len(BOOKS) * len(report.rows)
    c = MlflowClient(tracking_uri=target.tracking_uri)
    run = c.get_run(run_id)
    assert {a.path for a in c.list_artifacts(run_id, "evidence")} == {"evidence/evidence.md", "evidence/evidence.json"}
    assert run.data.tags["verdict_swing"] == swing.verdict
    assert run.data.metrics["swing_events"] == swing.events
    local = c.download_artifacts(run_id, "evidence/evidence.json", str(tmp_path))
    assert json.loads(open(local).read())["rows"][1]["strategy"] == "swing"


def test_replace_headline_when_markers_present_then_only_the_block_changes() -> None:
    readme = "# title\n<!-- evidence:start -->\nold table\n<!-- evidence:end -->\nrest\n"
    assert replace_headline(readme, "new table\n") == "# title\n<!-- evidence:start -->\nnew table\n<!-- evidence:end -->\nrest\n"
    with pytest.raises(ValueError, match="evidence:start"):
        replace_headline("# no block\n", "t")


def test_cli_evidence_when_readme_given_then_block_rewritten_and_files_written(tmp_path) -> None:
    # Arrange: a README with the headline block; a year of three coins, Swing only (fast).
    from typer.testing import CliRunner

    from deployments.cli import app

    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- evidence:start -->\nstale\n<!-- evidence:end -->\ntail\n")
    out = tmp_path / "evidence"
    env = {"MLCRYPTO_DATA__VAR_DIR": str(tmp_path), "MLCRYPTO_ML__N_ESTIMATORS": "30", "COLUMNS": "200"}
    args = ["evidence", "--strategy", "swing", "--symbols", "BTC,ETH,SOL", "--start", "2023-01-01", "--end", "2024-01-01"]
    # Act
    result = CliRunner().invoke(app, [*args, "--n-boot", "50", "--out", str(out), "--readme", str(readme)], env=env)
    # Assert
    assert result.exit_code == 0, result.output
    text = readme.read_text()
    assert "stale" not in text and "| Swing |" in text and text.endswith("<!-- evidence:end -->\ntail\n")
    assert "| Swing |" in result.output
    assert json.loads((out / "evidence.json").read_text())["rows"][0]["strategy"] == "swing"
