"""The MLproject through `mlflow run . --env-manager local`, in a subprocess, end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.conftest import REPO_ROOT, subprocess_env

pytestmark = pytest.mark.slow


def _mlflow_run(tracking_uri: str, cwd: Path, *params: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "mlflow", "run", str(REPO_ROOT), "--env-manager", "local"]
    for param in params:
        command += ["-P", param]
    return subprocess.run(
        command, cwd=cwd, env=subprocess_env(tracking_uri), capture_output=True, text=True, timeout=600
    )


def test_mlflow_run_tunes_tracks_and_registers(tracking_store: str, tmp_path: Path) -> None:
    completed = _mlflow_run(
        tracking_store, tmp_path, "n_trials=3", "timeout=60", "test_size=2e-1", "n_folds=3",
        "register_model=e2e-cancer",
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    client = mlflow.MlflowClient(tracking_store)
    runs = client.search_runs(["0"])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    # `mlflow run` logged these; the job must not re-log them as "60.0" or "0.2".
    assert parent.data.params["timeout"] == "60"
    assert parent.data.params["test_size"] == "2e-1"
    assert len(children) == 3
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {c.info.status for c in children} == {"FINISHED"}
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"best_config.json", "trials.csv", "summary.md"} <= artifacts

    versions = client.search_model_versions("name='e2e-cancer'")
    assert [str(v.version) for v in versions] == ["1"]
    mlflow.set_tracking_uri(tracking_store)
    model = mlflow.pyfunc.load_model("models:/e2e-cancer/1")
    rows = pd.DataFrame(np.zeros((4, 30)), columns=model.metadata.get_input_schema().input_names())
    assert len(model.predict(rows)) == 4


def test_mlflow_run_on_csv_with_text_categories(tracking_store: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n_rows = 400
    city = rng.choice(["Lyon", "Oslo", "Kyiv", "Lima"], size=n_rows).astype(object)
    city[rng.random(n_rows) < 0.1] = None
    income = rng.normal(50, 10, n_rows)
    income[rng.random(n_rows) < 0.1] = np.nan
    churned = ((city == "Oslo") ^ (rng.random(n_rows) < 0.15)).astype(int)
    path = tmp_path / "customers.csv"
    pd.DataFrame({"city": city, "income": income, "churned": churned}).to_csv(path, index=False)

    completed = _mlflow_run(
        tracking_store, tmp_path, f"data={path}", "target=churned", "model=xgboost", "n_trials=2",
        "n_folds=3", "register_model=churn",
    )
    assert completed.returncode == 0, completed.stderr[-3000:]

    mlflow.set_tracking_uri(tracking_store)
    model = mlflow.pyfunc.load_model("models:/churn/1")
    records = pd.DataFrame([{"city": "Oslo", "income": 51.0}, {"city": "Paris", "income": None}])
    assert len(model.predict(records)) == 2


def test_mlflow_run_bad_input_leaves_no_running_run(tracking_store: str, tmp_path: Path) -> None:
    completed = _mlflow_run(tracking_store, tmp_path, "model=catboost")

    assert completed.returncode != 0
    assert "mlflow-hpo: error: unknown model 'catboost'" in completed.stderr
    runs = mlflow.MlflowClient(tracking_store).search_runs(["0"])
    assert [r.info.status for r in runs] == ["FAILED"]
