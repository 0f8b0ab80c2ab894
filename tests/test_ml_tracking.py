"""models.tracking: clients on explicit URIs and the scoped fluent URIs, against MLflow's real URI state
(module globals and the MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI variables it writes)."""

from __future__ import annotations

import os
from pathlib import Path

import mlflow
import pytest

from core.settings import load_settings
from models.tracking import MlflowTarget, client, scoped_uris

ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def _state() -> tuple[str, str, str | None, str | None]:
    return mlflow.get_tracking_uri(), mlflow.get_registry_uri(), *(os.environ.get(k) for k in ENV)  # type: ignore[return-value]


def test_scoped_uris_when_block_exits_then_previous_uris_and_environment_restored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Arrange: the caller's process points at its own store through the environment.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/caller.db")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    before = _state()
    target = MlflowTarget(f"sqlite:///{tmp_path}/ours.db", f"sqlite:///{tmp_path}/ours.db")
    # Act
    with scoped_uris(target):
        inside = _state()
    # Assert
    assert inside[:2] == (target.tracking_uri, target.registry_uri)
    assert _state() == before
    assert "MLFLOW_REGISTRY_URI" not in os.environ  # MLflow's set_registry_uri wrote it; the scope removed it


def test_scoped_uris_when_block_raises_then_uris_restored_and_error_propagates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    before = _state()
    target = MlflowTarget(f"sqlite:///{tmp_path}/t.db", f"sqlite:///{tmp_path}/r.db")
    with pytest.raises(RuntimeError, match="boom"), scoped_uris(target):
        assert mlflow.get_registry_uri() == target.registry_uri
        raise RuntimeError("boom")
    assert _state() == before
    assert not any(k in os.environ for k in ENV)


def test_client_when_built_from_settings_then_uses_their_store_and_leaves_process_uris(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/caller.db")
    before = _state()
    uri = f"sqlite:///{tmp_path}/sub/mlflow.db"
    c = client(load_settings(data={"var_dir": str(tmp_path)}, ml={"tracking_uri": uri}))
    assert c.tracking_uri == uri
    assert c.search_experiments()[0].name == "Default"  # a working client on that store ...
    assert (tmp_path / "sub" / "mlflow.db").exists()  # ... whose folder was created
    assert _state() == before
    assert not (tmp_path / "caller.db").exists()
