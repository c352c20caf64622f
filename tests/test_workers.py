"""Worker processes: joining a study by name, worker runs, and 4 workers on PostgreSQL."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from mlflow.tracking import MlflowClient

from mlflow_hpo import TuneConfig, cli, tune
from mlflow_hpo.storage import default_storage_url, open_storage
from mlflow_hpo.tracking import TAG_PARENT, TAG_TRIAL
from mlflow_hpo.trial_loop import OWNER_ATTR
from mlflow_hpo.workers import CONFIG_ATTR, join_study
from tests._servers import FAST_OPTIONS, fast_cli_args, mlflow_server, pg_database, study_runs
from tests.conftest import subprocess_env


def test_worker_rejects_unknown_study(capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(["worker", "--study_name", "no-such-study"])

    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert err[-1].startswith("mlflow-hpo: error: study_name='no-such-study' is not a study in storage")
    assert "mlflow-hpo tune --study_name no-such-study" in err[-1]


def test_worker_run_tagged_and_empty(client: MlflowClient) -> None:
    result = tune(TuneConfig.from_mapping({**FAST_OPTIONS, "n_trials": "2", "study_name": "joined"}))
    study = optuna.load_study(study_name="joined", storage=open_storage(default_storage_url(mlflow.get_tracking_uri())))
    stored = dict(study.user_attrs[CONFIG_ATTR])
    stored["n_trials"] = 4
    study.set_user_attr(CONFIG_ATTR, stored)

    with mlflow.start_run(run_name="worker-run") as outer:
        n_run = join_study("joined")

    assert n_run == 2
    worker = client.get_run(outer.info.run_id)
    assert worker.data.tags["mlflow_hpo.role"] == "worker"
    assert worker.data.tags["mlflow_hpo.parent_run_id"] == result.parent_run_id
    assert worker.info.status == "FINISHED"
    runs = study_runs(client, "joined")
    children = [r for r in runs if r.data.tags.get(TAG_PARENT) == result.parent_run_id]
    assert sorted(int(r.data.tags[TAG_TRIAL]) for r in children) == [0, 1, 2, 3]
    assert [r for r in runs if r.data.tags.get(TAG_PARENT) == outer.info.run_id] == []
    assert client.get_run(result.parent_run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_four_workers_on_postgres(tmp_path: Path) -> None:
    with pg_database("hpo_mlflow") as mlflow_db, pg_database("hpo_optuna") as optuna_db:
        backend = mlflow_db.replace("postgresql://", "postgresql+psycopg2://")
        with mlflow_server(backend, tmp_path / "server") as server:
            env = subprocess_env(server.uri, MLFLOW_HPO_STORAGE=optuna_db)
            command = [
                sys.executable, "-m", "mlflow_hpo", "tune",
                *fast_cli_args(study_name="fleet", n_trials=100, workers=4),
            ]
            started = time.monotonic()
            completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
            wall_s = time.monotonic() - started
            assert completed.returncode == 0, completed.stderr[-3000:]

            client = MlflowClient(server.uri)
            runs = study_runs(client, "fleet")
            trials = optuna.load_study(study_name="fleet", storage=open_storage(optuna_db)).trials

    parents = [r for r in runs if r.data.tags.get("mlflow_hpo.role") == "study"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get(TAG_PARENT) == parents[0].info.run_id]
    assert len(trials) == 100
    assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}
    assert sorted(int(r.data.tags[TAG_TRIAL]) for r in children) == list(range(100))
    by_number = {t.number: t for t in trials}
    for run in children:
        trial = by_number[int(run.data.tags[TAG_TRIAL])]
        assert {k: run.data.params[k] for k in trial.params} == {k: str(v) for k, v in trial.params.items()}
    owners = {t.system_attrs[OWNER_ATTR].split("|")[1] for t in trials}
    per_worker = sorted(sum(1 for t in trials if t.system_attrs[OWNER_ATTR].split("|")[1] == o) for o in owners)
    logging.getLogger(__name__).info("workers figures: %.0f s wall, trials per worker %s", wall_s, per_worker)
    assert len(owners) == 4
    assert [r.info.run_id for r in runs if r.info.status == "RUNNING"] == []
