"""Tracking faults: odd names, long and non-finite values, autologging, and a tracking server outage."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
)

from mlflow_hpo import TuneConfig, tune
from mlflow_hpo.storage import default_storage_url, open_storage
from mlflow_hpo.tracking import TAG_PARENT, TAG_TRIAL, StudyMirror, TrialRecord
from mlflow_hpo.trial_loop import FAIL_REASON_ATTR, TrialLoop
from tests._servers import FAST_OPTIONS, fast_cli_args, mlflow_server, study_runs
from tests.conftest import subprocess_env


def _mirror(client: MlflowClient) -> tuple[StudyMirror, str, str]:
    experiment_id = client.create_experiment("faults")
    parent = client.create_run(experiment_id).info.run_id
    mirror = StudyMirror(MlflowClient(), experiment_id=experiment_id, parent_run_id=parent, study_name="faults")
    return mirror, experiment_id, parent


def _record(number: int, **fields: object) -> TrialRecord:
    values: dict[str, object] = {"state": optuna.trial.TrialState.COMPLETE, "params": {}, "metrics": {}, "tags": {}}
    values.update(fields)
    return TrialRecord(number=number, **values)  # type: ignore[arg-type]


def _child(client: MlflowClient, experiment_id: str, parent: str) -> mlflow.entities.Run:
    (run,) = client.search_runs([experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{parent}'")
    return run


def test_rejected_names_rewritten_distinctly(client: MlflowClient, tmp_path: Path) -> None:
    mirror, experiment_id, parent = _mirror(client)
    names = ["cv_recall@k(fold:1),b", "cv_recall_k_fold_1__b", "cv_recall@k(fold:1);b"]

    mirror.submit(_record(0, metrics={name: 0.5 for name in names}))
    mirror.close()

    keys = set(_child(client, experiment_id, parent).data.metrics)
    assert len(keys) == 3
    assert "cv_recall_k_fold_1__b" in keys
    assert all(set(key) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-./ ") for key in keys)
    mapping = json.loads(Path(client.download_artifacts(parent, "key_mapping.json", str(tmp_path))).read_text())
    assert set(mapping) == {"cv_recall@k(fold:1),b", "cv_recall@k(fold:1);b"}
    assert set(mapping.values()) <= keys
    client.set_terminated(parent)


def test_long_and_non_finite_values_logged(client: MlflowClient) -> None:
    mirror, experiment_id, parent = _mirror(client)
    features = ",".join(f"feature_{i:03d}" for i in range(800))

    mirror.submit(
        _record(
            0,
            params={"selected_features": features, "alpha": float("nan")},
            metrics={"cv_mean": 0.7, "cv_std": float("nan"), "cv_fold0": float("inf")},
            tags={"mlflow_hpo.note": "x" * 10000},
        )
    )
    mirror.close()

    run = _child(client, experiment_id, parent)
    assert run.info.status == "FINISHED"
    assert len(run.data.params["selected_features"]) <= MAX_PARAM_VAL_LENGTH
    assert "sha1" in run.data.params["selected_features"]
    assert run.data.params["alpha"] == "nan"
    assert run.data.metrics == {"cv_mean": 0.7}
    assert mirror.errors == 0
    client.set_terminated(parent)


def test_param_conflict_is_warning(client: MlflowClient, caplog: pytest.LogCaptureFixture) -> None:
    mirror, _, parent = _mirror(client)
    client.log_param(parent, "learning_rate", "0.1")

    with caplog.at_level(logging.WARNING):
        mirror.log_batch(parent, params=[Param("learning_rate", "0.3"), Param("num_leaves", "31")])
    mirror.close()

    params = client.get_run(parent).data.params
    assert params == {"learning_rate": "0.1", "num_leaves": "31"}
    assert "already logged as '0.1'" in caplog.text
    client.set_terminated(parent)


def test_param_conflict_keeps_metrics_of_same_batch(client: MlflowClient) -> None:
    mirror, _, parent = _mirror(client)
    client.log_param(parent, "learning_rate", "0.1")

    mirror.log_batch(parent, params=[Param("learning_rate", "0.3")], metrics=[Metric("cv_mean", 0.7, 0, 0)])
    mirror.close()

    run = client.get_run(parent)
    assert run.data.params == {"learning_rate": "0.1"}
    assert run.data.metrics == {"cv_mean": 0.7}
    client.set_terminated(parent)


def test_batch_past_request_limits_is_split(client: MlflowClient) -> None:
    mirror, _, parent = _mirror(client)
    params = [Param(f"p{i:03d}", str(i)) for i in range(MAX_PARAMS_TAGS_PER_BATCH + 50)]
    tags = [RunTag(f"t{i:03d}", str(i)) for i in range(30)]
    metrics = [Metric("curve", float(step), 0, step) for step in range(MAX_METRICS_PER_BATCH + 200)]

    mirror.log_batch(parent, params=params, tags=tags, metrics=metrics)
    mirror.close()

    run = client.get_run(parent)
    assert len(run.data.params) == len(params)
    assert {f"t{i:03d}" for i in range(30)} <= set(run.data.tags)
    assert len(client.get_metric_history(parent, "curve")) == len(metrics)
    client.set_terminated(parent)


def test_non_finite_objective_fails_trial(tmp_path: Path) -> None:
    journal = str(tmp_path / "nan.journal")
    study = optuna.create_study(storage=open_storage(journal), study_name="nan", direction="maximize")
    values = iter([0.5, float("nan"), float("inf"), 0.7, float("-inf")])

    def objective(trial: optuna.Trial) -> float:
        trial.suggest_float("x", 0, 1)
        return next(values)

    TrialLoop(study, storage_url=journal, objective=objective, on_finished=lambda s, t: None, n_trials=5, timeout=None).run()

    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "FAIL", "FAIL", "COMPLETE", "FAIL"]
    assert "objective value is nan" in study.trials[1].user_attrs[FAIL_REASON_ATTR]
    assert "objective value is inf" in study.trials[2].user_attrs[FAIL_REASON_ATTR]
    assert study.best_value == 0.7


def test_autologging_does_not_own_trial_keys(client: MlflowClient) -> None:
    mlflow.sklearn.autolog(log_models=False)
    try:
        result = tune(TuneConfig.from_mapping({**FAST_OPTIONS, "n_trials": "3", "study_name": "autolog"}))
    finally:
        mlflow.sklearn.autolog(disable=True)

    runs = study_runs(client, "autolog")
    children = [r for r in runs if r.data.tags.get(TAG_PARENT) == result.parent_run_id]
    assert len(children) == 3
    assert {r.info.status for r in children} == {"FINISHED"}
    study = optuna.load_study(study_name="autolog", storage=open_storage(default_storage_url(mlflow.get_tracking_uri())))
    for run in children:
        trial = study.trials[int(run.data.tags[TAG_TRIAL])]
        assert {k: run.data.params[k] for k in trial.params} == {k: str(v) for k, v in trial.params.items()}
    experiment_runs = client.search_runs([client.get_run(result.parent_run_id).info.experiment_id])
    assert len(experiment_runs) == 4


def test_wide_dataset_study_completes(client: MlflowClient, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    columns = {f"feature {i:03d} (raw@source:{i % 7})": rng.normal(size=120) for i in range(300)}
    frame = pd.DataFrame(columns)
    frame["label"] = (frame.iloc[:, 0] + rng.normal(size=120) > 0).astype(int)
    frame.to_csv(tmp_path / "wide.csv", index=False)

    options = {**FAST_OPTIONS, "data": str(tmp_path / "wide.csv"), "target": "label", "n_trials": "2", "study_name": "wide"}
    result = tune(TuneConfig.from_mapping(options))

    children = [r for r in study_runs(client, "wide") if r.data.tags.get(TAG_PARENT) == result.parent_run_id]
    assert len(children) == 2
    assert {r.info.status for r in children} == {"FINISHED"}
    assert client.get_run(result.parent_run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_tracking_outage_caught_up(tmp_path: Path) -> None:
    backend = f"sqlite:///{tmp_path / 'server.db'}"
    journal = str(tmp_path / "outage.journal")
    with mlflow_server(backend, tmp_path / "server") as server:
        env = subprocess_env(
            server.uri,
            MLFLOW_HPO_STORAGE=journal,
            MLFLOW_HTTP_REQUEST_MAX_RETRIES="1",
            MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR="1",
            MLFLOW_HTTP_REQUEST_TIMEOUT="5",
        )
        log = open(tmp_path / "tune.log", "wb")  # noqa: SIM115
        command = [sys.executable, "-m", "mlflow_hpo", "tune", *fast_cli_args(study_name="outage", n_trials=400, timeout=70)]
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        client = MlflowClient(server.uri)
        deadline = time.monotonic() + 240
        while len(study_runs(client, "outage")) < 4 and time.monotonic() < deadline:
            time.sleep(0.5)

        server.stop()
        stopped = time.monotonic()
        before = _finished(journal)
        time.sleep(30)
        during = _finished(journal) - before
        assert process.poll() is None, (tmp_path / "tune.log").read_text()[-3000:]
        server.start()
        outage_s = time.monotonic() - stopped

        status = process.wait(timeout=600)
        log.close()
        output = (tmp_path / "tune.log").read_text(errors="replace")
        assert status == 0, output[-3000:]
        trials = optuna.load_study(study_name="outage", storage=open_storage(journal)).trials
        runs = study_runs(client, "outage")

    logging.getLogger(__name__).info(
        "outage figures: %.0f s outage, %d trials finished during it, %d trials in all, %d runs",
        outage_s, during, len(trials), len(runs),
    )
    assert during > 0
    assert all(t.state.is_finished() for t in trials)
    assert not any(t.state == optuna.trial.TrialState.FAIL for t in trials)
    parents = [r for r in runs if r.data.tags.get("mlflow_hpo.role") == "study"]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get(TAG_PARENT) == parents[0].info.run_id]
    assert sorted(int(r.data.tags[TAG_TRIAL]) for r in children) == [t.number for t in trials]
    assert "retrying" in output


def _finished(journal: str) -> int:
    study = optuna.load_study(study_name="outage", storage=open_storage(journal))
    return sum(1 for t in study.trials if t.state.is_finished())

