"""MLScorer against a remote registry that goes away and comes back: a real MLflow tracking server (MLflow's
own Flask app, served on loopback in a thread) over the sqlite store of a tmp dir, with a DCA champion
trained on real 2023 bars. While the server is down the scorer keeps the model it loaded; when the
server is back and the champion alias has moved, it loads the new champion."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from mlflow import MlflowClient
from werkzeug.serving import make_server

from core.settings import Settings, load_settings
from core.strategies.registry import detect_all, signals_from_frame
from models.dataset import build_events, load_history
from models.pipeline import train_strategy
from models.promotion import promote
from models.run_log import log_training_run
from models.scorer import MLScorer
from models.tracking import CHAMPION, model_name

SYMBOLS = ["BTC", "ETH", "SOL", "DOGE", "LINK", "XRP"]


def _settings(tmp: Path, uri: str) -> Settings:
    return load_settings(data={"var_dir": str(tmp)},
                         ml={"tracking_uri": uri, "n_estimators": 20, "walk_forward_folds": 3})  # fmt: skip


class _Server:
    """MLflow's tracking server app (mlflow.server.app) on 127.0.0.1:port; stop() and start() again."""

    def __init__(self, backend_uri: str, port: int) -> None:
        import mlflow.server.handlers as handlers
        from mlflow.server import BACKEND_STORE_URI_ENV_VAR

        self.port = port
        self._env = (BACKEND_STORE_URI_ENV_VAR, backend_uri)
        handlers._tracking_store = handlers._model_registry_store = None  # the app caches its stores per process
        self._srv = None

    def start(self) -> None:
        from mlflow.server import app

        self._srv = make_server("127.0.0.1", self.port, app, threaded=True)
        threading.Thread(target=self._srv.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._srv is not None:
            self._srv.shutdown()
            self._srv.server_close()
            self._srv = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("remote")
    local = _settings(tmp, f"sqlite:///{tmp}/mlflow.db")
    bars = load_history(local, SYMBOLS, start=datetime(2023, 1, 1, tzinfo=UTC), end=datetime(2024, 1, 1, tzinfo=UTC))
    ev = build_events(bars, local, ("dca",))["dca"]
    report = train_strategy(ev, bars, local, log=True, backtest=False)
    assert promote("dca", local).promoted  # v1 = champion
    rows = detect_all(bars, local).filter(pl.col("strategy") == "dca").tail(5)
    return tmp, local, report, ev, bars, signals_from_frame(rows)


@pytest.fixture
def server(trained, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Server]:
    tmp, local, *_ = trained
    # Fail fast when the server is down (the defaults retry with backoff for minutes).
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    srv = _Server(local.mlflow_tracking_uri, _free_port())
    monkeypatch.setenv(*srv._env)
    srv.start()
    yield srv
    srv.stop()


def test_scorer_when_registry_unreachable_then_keeps_loaded_model_and_reloads_when_alias_moved(
    trained, server: _Server, caplog: pytest.LogCaptureFixture
) -> None:
    # Arrange: a scorer on the remote registry that checks the alias on every call; v1 loaded.
    tmp, local, report, ev, bars, signals = trained
    remote = _settings(tmp, f"http://127.0.0.1:{server.port}")
    scorer = MLScorer(remote, alias_check_seconds=0)
    scorer.observe_bars(bars)
    before = scorer.score(signals)
    name = model_name("dca", local)
    assert {s.model_version for s in before} == {f"{name}/1"} and not any(s.rule_only for s in before)
    # Act 1: the registry goes away.
    server.stop()
    with caplog.at_level(logging.WARNING, logger="models.scorer"):
        during = scorer.score(signals)
    # Assert 1: same model, same scores; the failure was logged, not raised.
    assert during == before
    assert any("cannot read" in r.getMessage() and "keeping version 1" in r.getMessage() for r in caplog.records)
    # ... while a scorer started during the outage has nothing to keep: rule-only defaults, said so.
    cold = MLScorer(remote, alias_check_seconds=0).score(signals)
    assert all(s.rule_only and s.model_version is None for s in cold)
    # Act 2: meanwhile a new version becomes champion (written straight to the backend store) ...
    v2 = log_training_run(report.model, report.walk_forward, {}, local, ev.trainable, ev.trainable.height).version
    MlflowClient(local.mlflow_tracking_uri).set_registered_model_alias(name, CHAMPION, v2)
    assert scorer.score(signals) == before  # still unreachable: still v1
    # ... and the registry comes back.
    server.start()
    after = scorer.score(signals)
    # Assert 2: the moved alias is seen and v2 loaded (same training data, so the same predictions).
    assert v2 == "2" and {s.model_version for s in after} == {f"{name}/2"}
    assert [s.confidence for s in after] == pytest.approx([s.confidence for s in before])
