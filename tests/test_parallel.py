"""Parallel trials: threads in one process, and many processes on one SQLite or journal study."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from mlflow_hpo import TuneConfig, tune
from mlflow_hpo.storage import open_storage, storage_url
from mlflow_hpo.study import SMALL_TABLE_ROWS, plan
from mlflow_hpo.tracking import TAG_PARENT, TAG_TRIAL
from tests._servers import FAST_OPTIONS, fast_cli_args, study_runs
from tests.conftest import subprocess_env


def _children(client: MlflowClient, parent_run_id: str) -> list[mlflow.entities.Run]:
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs([experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{parent_run_id}'")


def test_small_table_fits_with_one_thread() -> None:
    assert plan(TuneConfig.from_mapping({**FAST_OPTIONS, "n_jobs": "1"})).context.n_threads == 1


def test_threads_split_cores_between_trials(tmp_path: Path) -> None:
    cores = os.cpu_count() or 1
    n_rows = int(SMALL_TABLE_ROWS / 0.8) + 100
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=n_rows), "y": rng.integers(0, 2, n_rows)})
    frame.to_csv(tmp_path / "large.csv", index=False)
    base = {**FAST_OPTIONS, "data": str(tmp_path / "large.csv"), "target": "y"}

    assert plan(TuneConfig.from_mapping({**base, "n_jobs": "1"})).context.n_threads == cores
    assert plan(TuneConfig.from_mapping({**base, "n_jobs": "2"})).context.n_threads == max(1, cores // 2)
    assert plan(TuneConfig.from_mapping({**base, "n_jobs": "2", "workers": "2"})).context.n_threads == max(1, cores // 4)


def test_parallel_trials_keep_own_params(client: MlflowClient) -> None:
    result = tune(TuneConfig.from_mapping({**FAST_OPTIONS, "n_trials": "8", "n_jobs": "3", "study_name": "threads"}))

    study = optuna.load_study(study_name="threads", storage=open_storage(storage_url(mlflow.get_tracking_uri())))
    trials = {t.number: t for t in study.trials}
    assert len(trials) == 8
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials.values())
    children = _children(client, result.parent_run_id)
    assert sorted(int(run.data.tags[TAG_TRIAL]) for run in children) == sorted(trials)
    for run in children:
        trial = trials[int(run.data.tags[TAG_TRIAL])]
        expected = {name: str(value) for name, value in trial.params.items()}
        assert {k: v for k, v in run.data.params.items() if k in expected} == expected
    # Trials ran at the same time: some trial started before another one ended.
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials.values())
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_eight_processes_share_study(kind: str, tracking_store: str, tmp_path: Path, client: MlflowClient) -> None:
    client.search_experiments()  # creates the MLflow tables before the processes race for them
    storage = f"sqlite:///{tmp_path / 'optuna.db'}" if kind == "sqlite" else str(tmp_path / "optuna.journal")
    started = time.monotonic()
    env = subprocess_env(tracking_store, MLFLOW_HPO_STORAGE=storage)
    command = [sys.executable, "-m", "mlflow_hpo", "tune", *fast_cli_args(study_name="storm", n_trials=16)]
    logs = [open(tmp_path / f"process-{i}.log", "w+b") for i in range(8)]  # noqa: SIM115
    processes = [subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT) for log in logs]
    statuses = [process.wait(timeout=600) for process in processes]

    wall_s = time.monotonic() - started
    outputs = [(tmp_path / f"process-{i}.log").read_text(errors="replace") for i in range(8)]
    logging.getLogger(__name__).info("storm figures (%s): %.0f s wall for 8 processes", kind, wall_s)
    assert statuses == [0] * 8, "\n".join(o[-1500:] for o in outputs)
    trials = optuna.load_study(study_name="storm", storage=open_storage(storage)).trials
    assert len(trials) == 16
    assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
    runs = study_runs(client, "storm")
    parents = [r for r in runs if r.data.tags.get("mlflow_hpo.role") == "study"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get(TAG_PARENT) == parents[0].info.run_id]
    assert sorted(int(r.data.tags[TAG_TRIAL]) for r in children) == list(range(16))
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    assert not any("database is locked" in output for output in outputs)
