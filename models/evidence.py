"""The evidence report (issue 12): edge or no edge, strategy by strategy and for the combined book.

From one walk-forward run (models.evaluate.walk_forward, each event predicted by a fold model that never
saw it) and the engine's backtests on each strategy's walk-forward test window (same bars, same capital):

- pooled OOS AUC and Brier with 95% block-bootstrap intervals, the base-rate Brier (predicting each fold's
  training base rate), the number of events;
- books: ML-filtered (the predictions through the settings' decision rule), rule-only, BTC at the same
  exposure as each of them (core.backtest.buy_and_hold.buy_and_hold_same_exposure: BTC held with the
  book's invested share of equity bar by bar, at no cost, and again paying a market order's cost on the
  book's turnover), and plain buy-and-hold BTC (all capital); per book trades, trades per quarter (91.3 days) of
  the window, total return, max drawdown, annualised Sharpe of daily equity returns [95% CI], mean
  exposure; the ML book's Deflated Sharpe Ratio given `n_trials` configurations;
- the verdict (`verdict`): "edge" only when the AUC interval's lower bound is above 0.5 AND the ML
  book's Sharpe interval's lower bound is above both the rule-only book's Sharpe and the Sharpe of BTC
  held at the ML book's exposure; otherwise "no edge".

The combined row's AUC counts only pairs of events of the same strategy (models.uncertainty.stratified_auc):
pooled across strategies with different base rates, an AUC would reward telling the strategies apart.

The combined book trades all three strategies at once under the manager's allocation (the ML book with
all strategies' predictions), on the window every strategy's predictions cover (the latest start to the
earliest end), so no strategy falls back to rule-only scores there for want of a prediction.
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
from mlflow.entities import Metric, Param

from core.backtest.buy_and_hold import buy_and_hold, buy_and_hold_same_exposure
from core.backtest.engine import run_backtest
from core.backtest.metrics import daily_curve, max_drawdown
from core.domain import timeframe_duration
from core.scoring import RuleOnlyScorer, Scorer
from core.settings import Settings
from models.dataset import STRATEGIES, build_events
from models.evaluate import PRED_PREFIX, walk_forward
from models.oos import OneStrategyScorer, PredictionTableScorer
from models.tracking import MlflowTarget, experiment_id
from models.uncertainty import (
    Interval,
    auc_interval,
    bootstrap_interval,
    brier_interval,
    deflated_sharpe_from_returns,
    sharpe_interval,
    stratified_auc,
)

# Configurations compared on these walk-forward predictions before the defaults were chosen (docs/ml.md):
# 2 decision rules (threshold, EV) x 3 input sets (base, + edge features, + outcome features). Without a
# hyperparameter search this is the Deflated Sharpe's trial count; a tuned run multiplies it by its trials.
CONFIGS_COMPARED = 6
QUARTER_DAYS = 365.25 / 4
COMBINED = "combined"
BOOKS = ("ml", "rule", "btc_ml_exposure", "btc_ml_exposure_turnover", "btc_rule_exposure", "btc_rule_exposure_turnover", "btc")
BOOK_LABELS = {
    "ml": "ML-filtered",
    "rule": "rule-only",
    "btc_ml_exposure": "BTC at ML's exposure",
    "btc_ml_exposure_turnover": "BTC at ML's exposure, paying its turnover",
    "btc_rule_exposure": "BTC at rule-only's exposure",
    "btc_rule_exposure_turnover": "BTC at rule-only's exposure, paying its turnover",
    "btc": "BTC buy-and-hold (100%)",
}
EDGE, NO_EDGE = "edge", "no edge"
NAMES = {"dca": "DCA", "swing": "Swing", "channel": "Channel", COMBINED: "Combined (all three)"}


def verdict(auc_low: float, ml_sharpe_low: float, rule_sharpe: float, btc_same_exposure_sharpe: float) -> str:
    """Returns "edge" only when the AUC's 95% lower bound > 0.5, and the ML book's Sharpe 95% lower bound is above
    both the rule-only book's Sharpe and the Sharpe of BTC held at the ML book's exposure; otherwise "no
    edge". An undefined figure (nan: no trades, no variance) is no evidence, so "no edge"."""
    ok = auc_low > 0.5 and ml_sharpe_low > rule_sharpe and ml_sharpe_low > btc_same_exposure_sharpe  # nan: False
    return EDGE if ok else NO_EDGE


@dataclass(frozen=True)
class Book:
    trades: int | None
    trades_per_quarter: float | None
    total_return: float
    max_drawdown: float
    sharpe: Interval
    exposure: float
    deflated_sharpe: float | None = None
    turnover: float | None = None  # the BTC benchmarks: sum of the followed book's |cash change| / equity


@dataclass(frozen=True)
class StrategyEvidence:
    strategy: str
    window: tuple[str, str]
    events: int
    base_rate: float
    auc: Interval
    brier: Interval
    brier_base: float
    books: dict[str, Book]
    verdict: str


@dataclass
class EvidenceReport:
    created: str
    machine: str
    settings_fingerprint: str
    decision_rule: str
    n_trials: int
    n_trials_source: str
    n_boot: int
    bars: int
    symbols: int
    data_span: tuple[str, str]
    rows: list[StrategyEvidence] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=_json_default)


def _json_default(v: object) -> object:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return str(v)


def machine() -> str:
    cpu = platform.machine()
    try:
        cpu = next(
            ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def daily_returns(curve: pl.DataFrame, start: datetime, end: datetime, capital: float) -> np.ndarray:
    """Daily simple returns of an equity curve (ts, equity) from `capital` at `start`, sampled as
    core.backtest.metrics does for the Sharpe (each UTC day's last value, days without a step carried)."""
    first = pl.DataFrame({"ts": [start], "equity": [capital]}, schema={"ts": pl.Datetime("us", "UTC"), "equity": pl.Float64})
    full = pl.concat([first, curve.select(pl.col("ts").dt.cast_time_unit("us"), pl.col("equity").cast(pl.Float64))])
    daily = daily_curve(full, start, end).to_numpy()
    return daily[1:] / daily[:-1] - 1


def _book(
    curve: pl.DataFrame,
    start: datetime,
    end: datetime,
    capital: float,
    trades: int | None,
    exposure: float,
    n_boot: int,
    seed: int,
    n_trials: int | None = None,
    turnover: float | None = None,
) -> Book:
    r = daily_returns(curve, start, end, capital)
    ok = r.size > 2 and bool(np.std(r) > 0)
    nan = Interval(math.nan, math.nan, math.nan, 0)
    iv = sharpe_interval(r, 365, n_boot=n_boot, seed=seed) if ok else nan
    quarters = (end - start) / timedelta(days=QUARTER_DAYS)
    full = pl.concat([pl.DataFrame({"equity": [capital]}), curve.select(pl.col("equity").cast(pl.Float64))])
    return Book(
        trades=trades,
        trades_per_quarter=trades / quarters if trades is not None else None,
        total_return=float(full["equity"][-1]) / capital - 1,
        max_drawdown=max_drawdown(full["equity"]),
        sharpe=iv,
        exposure=exposure,
        deflated_sharpe=deflated_sharpe_from_returns(r, n_trials) if n_trials and ok else None,
        turnover=turnover,
    )


def compare_books(
    bars: pl.DataFrame,
    settings: Settings,
    start: datetime,
    end: datetime,
    ml: Scorer,
    rule: Scorer,
    n_trials: int,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Book]:
    """The books of BOOKS on one window (same bars, same capital). "BTC at X's exposure" is the bare market
    return of X's invested share held in BTC (no costs); "..., paying its turnover" also pays a market
    order's cost on X's turnover (core.backtest.buy_and_hold.buy_and_hold_same_exposure)."""
    capital = settings.risk.capital
    out: dict[str, Book] = {}
    for key, scorer in (("ml", ml), ("rule", rule)):
        res = run_backtest(bars, settings, start=start, end=end, scorer=scorer)
        same = buy_and_hold_same_exposure(bars, settings, start, end, res.equity, capital=capital, costs=False)
        paying = buy_and_hold_same_exposure(bars, settings, start, end, res.equity, capital=capital)
        # The book's own time-weighted exposure is the mean weight on the BTC bar grid, as its benchmark's.
        out[key] = _book(
            res.equity.select("ts", "equity"),
            start,
            end,
            capital,
            res.trades.height,
            float(same.stats["exposure"]),
            n_boot,
            seed,
            n_trials if key == "ml" else None,
        )
        for name, b in ((f"btc_{key}_exposure", same), (f"btc_{key}_exposure_turnover", paying)):
            stats = b.stats
            out[name] = _book(b.equity, start, end, capital, None, stats["exposure"], n_boot, seed, None, stats["turnover"])
    bh = buy_and_hold(bars, settings, start, end, capital=capital)
    out["btc"] = _book(bh.equity, start, end, capital, 1, 1.0, n_boot, seed)
    return out


def _window(predictions: pl.DataFrame, step: timedelta) -> tuple[datetime, datetime]:
    return predictions["ts"].min(), predictions["ts"].max() + step  # type: ignore[operator,return-value]


def _evidence_row(
    name: str,
    predictions: pl.DataFrame,
    brier_base: float,
    books: dict[str, Book],
    window: tuple[datetime, datetime],
    n_boot: int,
    seed: int,
) -> StrategyEvidence:
    predictions = predictions.sort("ts")  # the block bootstrap resamples runs of consecutive events
    y = predictions["success"].to_numpy().astype(int)
    p = predictions[PRED_PREFIX + "confidence"].to_numpy()
    if "strategy" in predictions.columns and predictions["strategy"].n_unique() > 1:  # combined: within-strategy pairs
        g = predictions["strategy"].to_numpy()
        auc = bootstrap_interval(stratified_auc, y, p, g, n_boot=n_boot, seed=seed)
    else:
        auc = auc_interval(y, p, n_boot=n_boot, seed=seed)
    brier = brier_interval(y, p, n_boot=n_boot, seed=seed)
    return StrategyEvidence(
        strategy=name,
        window=(window[0].isoformat(), window[1].isoformat()),
        events=int(y.size),
        base_rate=float(y.mean()),
        auc=auc,
        brier=brier,
        brier_base=brier_base,
        books=books,
        verdict=verdict(auc.low, books["ml"].sharpe.low, books["rule"].sharpe.point, books["btc_ml_exposure"].sharpe.point),
    )


def evidence_report(
    bars: pl.DataFrame,
    settings: Settings,
    strategies: tuple[str, ...] = STRATEGIES,
    n_trials: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    combined: bool = True,
) -> EvidenceReport:
    """Walk-forward on `bars` (one timeframe, with BTC), then the books per strategy and combined.

    `n_trials`: configurations tried for the Deflated Sharpe; default CONFIGS_COMPARED (no tuning)."""
    t0 = time.perf_counter()
    trials, source = (
        (n_trials, "given")
        if n_trials
        else (CONFIGS_COMPARED, "configurations compared, no tuning: 2 decision rules x 3 input sets")
    )
    report = EvidenceReport(
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        machine=machine(),
        settings_fingerprint=settings.fingerprint(),
        decision_rule=settings.ml.decision_rule.value,
        n_trials=trials,
        n_trials_source=source,
        n_boot=n_boot,
        bars=bars.height,
        symbols=bars["symbol"].n_unique(),
        data_span=(str(bars["ts"].min()), str(bars["ts"].max())),
    )
    step = timeframe_duration(str(bars["timeframe"][0]))
    events = build_events(bars, settings, strategies)
    preds: dict[str, pl.DataFrame] = {}
    bases: dict[str, float] = {}
    rule = RuleOnlyScorer(settings)
    for s in strategies:
        ev = events[s]
        if ev.events.is_empty():
            continue
        wf = walk_forward(ev.trainable, s, ev.feature_names, settings)
        if wf.predictions.is_empty():
            continue
        preds[s], bases[s] = wf.predictions, float(wf.pooled["brier_base"])
        win = _window(wf.predictions, step)
        ml_scorer = OneStrategyScorer(PredictionTableScorer(wf.predictions, settings), s)
        books = compare_books(bars, settings, *win, ml_scorer, OneStrategyScorer(rule, s), trials, n_boot, seed)
        report.rows.append(_evidence_row(s, wf.predictions, bases[s], books, win, n_boot, seed))
    if combined and len(preds) > 1:
        windows = [_window(p, step) for p in preds.values()]
        win = (max(w[0] for w in windows), min(w[1] for w in windows))
        allp = pl.concat(
            [p.select("signal_id", "ts", "strategy", "success", pl.col(f"^{PRED_PREFIX}.*$")) for p in preds.values()],
            how="diagonal_relaxed",
        )
        pooled = allp.filter((pl.col("ts") >= win[0]) & (pl.col("ts") < win[1]))
        books = compare_books(bars, settings, *win, PredictionTableScorer(allp, settings), rule, trials, n_boot, seed)
        # Base-rate Brier of the pooled events: each strategy's (over its whole test span), weighted by its
        # events inside the common window (the per-event fold base rates are not kept in the predictions).
        n = {s: pooled.filter(pl.col("strategy") == s).height for s in preds}
        base = sum(bases[s] * n[s] for s in preds) / sum(n.values())
        report.rows.append(_evidence_row(COMBINED, pooled, base, books, win, n_boot, seed))
    report.seconds = time.perf_counter() - t0
    return report


def _pct(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v * 100:+.1f}%"


def _iv(iv: Interval, digits: int = 2) -> str:
    if not math.isfinite(iv.point):
        return "-"
    return f"{iv.point:.{digits}f} [{iv.low:.{digits}f}, {iv.high:.{digits}f}]"


def _header(report: EvidenceReport) -> str:
    return (
        f"Walk-forward out-of-sample, run {report.created[:10]} on {report.machine} in {report.seconds:.0f} s; "
        f"{report.bars:,} 1h bars of {report.symbols} coins ({report.data_span[0][:10]} .. {report.data_span[1][:10]}); "
        f"decision rule `{report.decision_rule}`; 95% block-bootstrap intervals ({report.n_boot} resamples); "
        f"DSR = Deflated Sharpe of the ML book with {report.n_trials} trials ({report.n_trials_source})."
    )


def _ret_dd_sharpe(b: Book) -> str:
    return f"{_pct(b.total_return)} / {b.max_drawdown * 100:.1f}% / {_iv(b.sharpe)}"


def markdown(report: EvidenceReport) -> str:
    """The README headline: skill and verdict per strategy, then one row of books per strategy (return /
    max drawdown / Sharpe [95% CI])."""
    lines = [
        _header(report),
        "",
        "| strategy | test window | events | AUC [95% CI] | Brier [95% CI] | base-rate Brier | ML trades / quarter | verdict |",
        "|---|---|---:|---|---|---:|---:|---|",
    ]
    for r in report.rows:
        ml = r.books["ml"]
        lines.append(
            f"| {NAMES.get(r.strategy, r.strategy)} | {r.window[0][:10]} .. {r.window[1][:10]} | {r.events:,} | "
            f"{_iv(r.auc, 3)} | "
            f"{_iv(r.brier, 3)} | {r.brier_base:.3f} | {ml.trades_per_quarter:.1f} | **{r.verdict}** |"
        )
    lines += [
        "",
        "| strategy | ML-filtered | rule-only | BTC at ML's exposure | BTC buy-and-hold (100%) | DSR (ML) | ML exposure |",
        "|---|---|---|---|---|---:|---:|",
        "| | return / max DD / Sharpe [95% CI] | same | same | same | | |",
    ]
    for r in report.rows:
        b = r.books
        lines.append(
            f"| {NAMES.get(r.strategy, r.strategy)} | {_ret_dd_sharpe(b['ml'])} | {_ret_dd_sharpe(b['rule'])} | "
            f"{_ret_dd_sharpe(b['btc_ml_exposure'])} | {_ret_dd_sharpe(b['btc'])} | {_num(b['ml'].deflated_sharpe)} | "
            f"{b['ml'].exposure * 100:.1f}% |"
        )
    return "\n".join(lines) + "\n"


def markdown_books(report: EvidenceReport) -> str:
    """Every book of every row: trades, return, drawdown, Sharpe [95% CI], DSR, time-weighted exposure."""
    lines = [
        "| strategy | book | trades | total return | max drawdown | Sharpe [95% CI] | DSR | mean exposure |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in report.rows:
        for key in BOOKS:
            b = r.books[key]
            trades = "-" if b.trades is None else f"{b.trades:,}"
            lines.append(
                f"| {NAMES.get(r.strategy, r.strategy)} | {BOOK_LABELS[key]} | {trades} | {_pct(b.total_return)} | "
                f"{b.max_drawdown * 100:.1f}% | "
                f"{_iv(b.sharpe)} | {_num(b.deflated_sharpe)} | {b.exposure * 100:.1f}% |"
            )
    return "\n".join(lines) + "\n"


def _num(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.2f}"


def _metrics(report: EvidenceReport) -> dict[str, float]:
    out: dict[str, float] = {"n_trials": float(report.n_trials), "seconds": report.seconds}
    for r in report.rows:
        s = r.strategy
        out |= {f"{s}_events": float(r.events), f"{s}_brier_base": r.brier_base, f"{s}_edge": float(r.verdict == EDGE)}
        for name, iv in (("auc", r.auc), ("brier", r.brier)):
            out |= {f"{s}_{name}": iv.point, f"{s}_{name}_ci_low": iv.low, f"{s}_{name}_ci_high": iv.high}
        for key, b in r.books.items():
            out |= {
                f"{s}_{key}_total_return": b.total_return,
                f"{s}_{key}_max_drawdown": b.max_drawdown,
                f"{s}_{key}_sharpe": b.sharpe.point,
                f"{s}_{key}_sharpe_ci_low": b.sharpe.low,
                f"{s}_{key}_sharpe_ci_high": b.sharpe.high,
                f"{s}_{key}_exposure": b.exposure,
            }
            if b.trades is not None:
                out[f"{s}_{key}_trades"] = float(b.trades)
            if b.deflated_sharpe is not None:
                out[f"{s}_{key}_deflated_sharpe"] = b.deflated_sharpe
    return {k: v for k, v in out.items() if math.isfinite(v)}


README_START, README_END = "<!-- evidence:start -->", "<!-- evidence:end -->"


def replace_headline(text: str, table: str) -> str:
    """`text` (the README) with what lies between README_START and README_END replaced by `table`."""
    i, j = text.find(README_START), text.find(README_END)
    if i < 0 or j < i:
        raise ValueError(f"the README has no {README_START} ... {README_END} block to replace")
    return text[: i + len(README_START)] + "\n" + table + text[j:]


def write_report(report: EvidenceReport, out_dir: Path) -> tuple[Path, Path]:
    """evidence.md and evidence.json in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md, js = out_dir / "evidence.md", out_dir / "evidence.json"
    md.write_text(markdown(report) + "\n" + markdown_books(report))
    js.write_text(report.to_json())
    return md, js


def log_evidence(report: EvidenceReport, target: MlflowTarget, experiment: str = "mlcrypto-evidence") -> str:
    """One MLflow run in `experiment`: the markdown table and the JSON as artifacts under evidence/, the
    figures as metrics, verdicts as tags. Returns the run id."""
    c = target.client()
    exp = experiment_id(c, experiment, target.tracking_uri)
    tags = {"settings_fingerprint": report.settings_fingerprint, **{f"verdict_{r.strategy}": r.verdict for r in report.rows}}
    run_id = c.create_run(exp, tags=tags, run_name=f"evidence-{report.created[:10]}").info.run_id
    params = {
        "n_trials": report.n_trials,
        "n_trials_source": report.n_trials_source,
        "n_boot": report.n_boot,
        "decision_rule": report.decision_rule,
        "machine": report.machine,
        "bars": report.bars,
    }
    ts = int(time.time() * 1000)
    metrics = [Metric(k, v, ts, 0) for k, v in _metrics(report).items()]
    c.log_batch(run_id, params=[Param(k, str(v)[:500]) for k, v in params.items()])
    for i in range(0, len(metrics), 1000):
        c.log_batch(run_id, metrics=metrics[i : i + 1000])
    with tempfile.TemporaryDirectory() as tmp:
        for path in write_report(report, Path(tmp)):
            c.log_artifact(run_id, str(path), "evidence")
    c.set_terminated(run_id)
    return run_id
