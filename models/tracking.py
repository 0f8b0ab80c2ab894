"""Where MLflow lives and how to talk to it: explicit URIs, a client per caller, names and aliases.

Nothing here changes process-wide MLflow state behind the caller's back. Every call goes through an
`MlflowClient(tracking_uri=..., registry_uri=...)` built from the settings. MLflow's fluent model
logging (`mlflow.pyfunc.log_model`, `mlflow.register_model`) only reads the process-wide URIs, so
`scoped_uris` sets them for the length of a `with` block and then restores what was there before,
including the environment variables MLflow writes when they are set.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.environment_variables import MLFLOW_REGISTRY_URI, MLFLOW_TRACKING_URI
from mlflow.exceptions import MlflowException
from mlflow.tracking._model_registry import utils as _registry_state
from mlflow.tracking._tracking_service import utils as _tracking_state

from core.settings import Settings


class Alias(StrEnum):
    """Registry aliases of a strategy's model versions."""

    CHAMPION = "champion"  # what MLScorer trades with
    CHALLENGER = "challenger"  # the newest registered version, waiting for the promotion rule


CHAMPION = Alias.CHAMPION
CHALLENGER = Alias.CHALLENGER


@dataclass(frozen=True)
class MlflowTarget:
    """The tracking store and the model registry one caller talks to."""

    tracking_uri: str
    registry_uri: str

    @classmethod
    def from_settings(cls, settings: Settings) -> MlflowTarget:
        """The configured store (settings.mlflow_tracking_uri) for both; a local sqlite file's folder is created."""
        uri = settings.mlflow_tracking_uri
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return cls(uri, uri)

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.registry_uri)


def tracking_uri(settings: Settings) -> str:
    """The tracking URI of the settings (for `mlflow ui --backend-store-uri`)."""
    return MlflowTarget.from_settings(settings).tracking_uri


def client(settings: Settings) -> MlflowClient:
    """A client on the configured store; the process-wide MLflow URIs are left as they are."""
    return MlflowTarget.from_settings(settings).client()


# Fluent calls inside two overlapping scopes would see each other's URIs: one scope at a time.
_SCOPE_LOCK = threading.RLock()


@contextmanager
def scoped_uris(target: MlflowTarget) -> Iterator[None]:
    """Point MLflow's fluent API at `target` inside the block; restore the previous URIs on exit.

    Only for fluent calls that take no URI (model logging and registration). Other threads of the
    process that use the fluent API during the block see the target too: keep the block short."""
    with _SCOPE_LOCK:
        saved = (
            _tracking_state._tracking_uri,
            _registry_state._registry_uri,
            MLFLOW_TRACKING_URI.get(),
            MLFLOW_REGISTRY_URI.get(),
        )
        try:
            mlflow.set_tracking_uri(target.tracking_uri)
            mlflow.set_registry_uri(target.registry_uri)
            yield
        finally:
            tracking, registry, tracking_env, registry_env = saved
            mlflow.set_tracking_uri(tracking)  # type: ignore[arg-type]  # None unsets it (MLflow's own reset)
            _registry_state._registry_uri = registry  # set_registry_uri(None) would keep the env variable
            for var, value in ((MLFLOW_TRACKING_URI, tracking_env), (MLFLOW_REGISTRY_URI, registry_env)):
                if value is None:
                    var.unset()
                else:
                    var.set(value)


def experiment_name(strategy: str, settings: Settings) -> str:
    return f"{settings.ml.experiment_prefix}-{strategy}"


def model_name(strategy: str, settings: Settings) -> str:
    return f"{settings.ml.registered_model_prefix}-{strategy}"


def experiment_id(c: MlflowClient, name: str, tracking: str) -> str:
    """The experiment's id, created on first use.

    A local sqlite store keeps its artifacts beside the database instead of ./mlruns of whatever the
    working directory is."""
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    location = None
    if tracking.startswith("sqlite:///"):
        location = (Path(tracking.removeprefix("sqlite:///")).parent / "artifacts" / name).as_uri()
    return str(c.create_experiment(name, artifact_location=location))


def alias_version(c: MlflowClient, name: str, alias: str) -> str | None:
    """Version behind an alias, or None when the model or the alias does not exist.

    Any other failure (store unreachable, ...) is raised: "no champion" must not be confused with
    "cannot ask".
    """
    try:
        return str(c.get_model_version_by_alias(name, alias).version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
