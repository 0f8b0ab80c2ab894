"""Matplotlib PNGs logged with every training run: feature importance, calibration, OOS equity curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.figure import Figure  # the object API draws with Agg; no pyplot, no process-wide backend


def plot_feature_importance(importance: dict[str, float], path: Path, title: str) -> Path:
    items = sorted(importance.items(), key=lambda kv: kv[1])
    fig = Figure(figsize=(7, 0.3 * len(items) + 1.5))
    ax = fig.subplots()
    ax.barh([k for k, _ in items], [v for _, v in items], color="#4477aa")
    ax.set_xlabel("share of total gain")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def plot_calibration(y: np.ndarray, p: np.ndarray, path: Path, title: str, bins: int = 10) -> Path:
    """Reliability diagram of out-of-sample probabilities: mean predicted vs observed rate per bin."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    mean_p, rate, count = [], [], []
    for b in range(bins):
        m = idx == b
        if m.any():
            mean_p.append(p[m].mean())
            rate.append(y[m].mean())
            count.append(int(m.sum()))
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="perfect")
    ax.plot(mean_p, rate, marker="o", color="#cc6677", label="model (OOS)")
    for x, r, c in zip(mean_p, rate, count, strict=True):
        ax.annotate(str(c), (x, r), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(float(y.mean()) if y.size else 0.0, color="#117733", lw=1, label="base rate")
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed success rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path


def plot_equity(curves: dict[str, pl.DataFrame], path: Path, title: str) -> Path:
    """Equity curves (frames with ts, equity) side by side, e.g. ML-filtered vs rule-only."""
    fig = Figure(figsize=(8, 4))
    ax = fig.subplots()
    for label, curve in curves.items():
        if not curve.is_empty():
            ax.plot(curve["ts"].to_list(), curve["equity"].to_list(), label=label)
    ax.set_ylabel("equity")
    ax.set_title(title)
    ax.legend()
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path
