"""Shared fixtures: every test gets its own MLflow store and Optuna journal."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def empty_tracking_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Create one migrated, empty MLflow SQLite store for tests to copy.

    Creating the schema runs every MLflow migration (seconds per store), so
    each test starts from a copy of this file instead.
    """
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(autouse=True)
def tracking_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_tracking_db: Path) -> Iterator[str]:
    """Point MLflow at a fresh SQLite file and run the test in its own folder."""
    shutil.copyfile(empty_tracking_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_HPO_STORAGE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield uri
    leaked = mlflow.active_run()
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    assert leaked is None, f"test left MLflow run {leaked.info.run_id} active"


@pytest.fixture
def client(tracking_store: str) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(tracking_uri=tracking_store)


def subprocess_env(tracking_uri: str, **extra: str) -> dict[str, str]:
    """Return the environment for a child process that tracks to ``tracking_uri``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    env.update(extra)
    return env
