"""Equity and drawdown plots as PNG (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import polars as pl  # noqa: E402


def equity_drawdown_png(equity: pl.DataFrame, capital: float, path: Path, title: str) -> Path:
    """Two panels: marked equity (with the starting capital as a line) and drawdown from the running peak."""
    ts = equity.get_column("ts").to_list()
    eq = equity.get_column("equity")
    dd = ((eq / eq.cum_max()) - 1.0).to_list() if eq.len() else []
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, height_ratios=(2, 1))
    ax1.plot(ts, eq.to_list(), lw=1.0, color="tab:blue", drawstyle="steps-post")
    ax1.axhline(capital, color="grey", lw=0.8, ls="--")
    ax1.set_ylabel("equity (USDT)")
    ax1.set_title(title)
    ax2.fill_between(ts, dd, 0, color="tab:red", alpha=0.4, step="post")
    ax2.set_ylabel("drawdown")
    ax2.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
