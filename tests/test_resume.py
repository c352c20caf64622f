"""Resuming a study: the trial total, the parent run, changed spaces, dead trials, reconciliation."""

from __future__ import annotations

import socket
import subprocess
import sys

import mlflow
import optuna
import pytest
from mlflow.tracking import MlflowClient

from mlflow_hpo import TuneConfig, tune
from mlflow_hpo._errors import ConfigError
from mlflow_hpo.storage import open_storage, storage_url
from mlflow_hpo.study import SPACE_ATTR
from mlflow_hpo.tracking import TAG_PARENT, TAG_TRIAL, StudyMirror, TrialRecord
from mlflow_hpo.trial_loop import FAIL_REASON_ATTR, OWNER_ATTR, RETRY_OF_ATTR
from tests._servers import FAST_OPTIONS


def _config(**changes: object) -> TuneConfig:
    return TuneConfig.from_mapping({**FAST_OPTIONS, "study_name": "resumed", **changes})


def _study(name: str = "resumed") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage_url(mlflow.get_tracking_uri())))


def _children(client: MlflowClient, parent_run_id: str) -> list[mlflow.entities.Run]:
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs([experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{parent_run_id}'")


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_resume_continues_to_total(client: MlflowClient) -> None:
    first = tune(_config(n_trials=3))
    second = tune(_config(n_trials=5))
    third = tune(_config(n_trials=4))

    assert second.parent_run_id == first.parent_run_id
    assert third.parent_run_id == first.parent_run_id
    assert len(_study().trials) == 5
    assert all(t.state.is_finished() for t in _study().trials)
    numbers = sorted(int(run.data.tags[TAG_TRIAL]) for run in _children(client, first.parent_run_id))
    assert numbers == [0, 1, 2, 3, 4]
    assert client.get_run(first.parent_run_id).info.status == "FINISHED"


def test_resume_rejects_changed_space_or_metric() -> None:
    tune(_config(n_trials=1))
    with pytest.raises(ConfigError, match="optimizes metric='neg_log_loss', not 'accuracy'"):
        tune(_config(n_trials=2, metric="accuracy"))
    study = _study()
    stored = dict(study.user_attrs[SPACE_ATTR])
    name = sorted(stored)[0]
    stored[name] = "CategoricalDistribution(choices=('a', 'b'))"
    stored["removed_param"] = "IntDistribution(high=9, log=False, low=1, step=1)"
    study.set_user_attr(SPACE_ATTR, stored)

    with pytest.raises(ConfigError, match="another search space") as caught:
        tune(_config(n_trials=2))

    message = str(caught.value)
    assert "removed_param" in message
    assert name in message
    assert "choices=('a', 'b')" in message
    assert "study_name such as resumed-v2" in message
    assert len(_study().trials) == 1


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"seed": 3}, r"created with seed=42 \(not 3\), so new trials would be scored on other rows; pass seed=42"),
        ({"n_folds": "3", "test_size": 0.3}, r"test_size=0.2 \(not 0.3\), n_folds=2 \(not 3\)"),
        ({"data": "sklearn:wine"}, r"created on other data \(table digest [0-9a-f]{16}, data='sklearn:wine' gives"),
    ],
    ids=["seed", "folds-and-test-size", "data"],
)
def test_resume_changed_rows_rejected(client: MlflowClient, changes: dict[str, object], expected: str) -> None:
    first = tune(_config(n_trials=1))
    runs_before = client.search_runs([client.get_run(first.parent_run_id).info.experiment_id])

    with pytest.raises(ConfigError, match=expected) as caught:
        tune(_config(n_trials=2, **changes))

    assert "use a new study_name such as resumed-v2" in str(caught.value)
    assert len(_study().trials) == 1
    runs_after = client.search_runs([client.get_run(first.parent_run_id).info.experiment_id])
    assert [(r.info.run_id, r.info.status) for r in runs_after] == [
        (r.info.run_id, r.info.status) for r in runs_before
    ]


def test_dead_process_trial_failed_and_retried(client: MlflowClient) -> None:
    first = tune(_config(n_trials=2))
    study = _study()
    distributions = study.trials[0].distributions
    # A trial that finished in the storage but never reached MLflow.
    study.add_trial(optuna.create_trial(params=study.trials[0].params, distributions=distributions, value=-0.5))
    orphan = study.ask(distributions)
    owner = f"{socket.gethostname()}|{_dead_pid()}|1"
    study._storage.set_trial_system_attr(orphan._trial_id, OWNER_ATTR, owner)

    tune(_config(n_trials=5, retry_failed="true"))

    trials = _study().trials
    failed = trials[orphan.number]
    assert failed.state == optuna.trial.TrialState.FAIL
    assert "ended while the trial was running" in failed.user_attrs[FAIL_REASON_ATTR]
    retries = [t for t in trials if t.user_attrs.get(RETRY_OF_ATTR) == orphan.number]
    assert len(retries) == 1
    assert retries[0].params == failed.params
    assert retries[0].state == optuna.trial.TrialState.COMPLETE
    assert len([t for t in trials if t.state.is_finished()]) == 5

    children = {int(r.data.tags[TAG_TRIAL]): r for r in _children(client, first.parent_run_id)}
    assert sorted(children) == [t.number for t in trials]
    assert children[2].info.status == "FINISHED"
    assert children[orphan.number].info.status == "FAILED"
    assert "ended while the trial was running" in children[orphan.number].data.tags["mlflow_hpo.fail_reason"]


def test_running_trial_of_live_process_kept() -> None:
    tune(_config(n_trials=1))
    study = _study()
    orphan = study.ask(study.trials[0].distributions)
    # This test process is alive, so its trial must stay RUNNING.
    study._storage.set_trial_system_attr(orphan._trial_id, OWNER_ATTR, _own_owner())

    from mlflow_hpo.trial_loop import TrialLoop

    loop = TrialLoop(
        study, storage_url=storage_url(mlflow.get_tracking_uri()), objective=lambda t: 0.0,
        on_finished=lambda s, t: None, n_trials=1, timeout=None,
    )
    assert loop._fail_dead_trials_locked() == []
    assert _study().trials[orphan.number].state == optuna.trial.TrialState.RUNNING


def _own_owner() -> str:
    from mlflow_hpo.trial_loop import process_owner

    return process_owner()


def test_concurrent_mirrors_write_one_child(client: MlflowClient, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from mlflow_hpo.storage import study_lock

    experiment_id = client.create_experiment("mirrors")
    parent = client.create_run(experiment_id).info.run_id
    journal = str(tmp_path / "locks.journal")
    mirrors = [
        StudyMirror(
            MlflowClient(), experiment_id=experiment_id, parent_run_id=parent, study_name="s",
            lock=lambda: study_lock(journal, "s", "mirror"),
        )
        for _ in range(4)
    ]
    for number in range(5):
        for mirror in mirrors:
            record = TrialRecord(
                number=number, state=optuna.trial.TrialState.COMPLETE, params={"x": number},
                metrics={"cv_mean": 0.5}, tags={},
            )
            mirror.submit(record)
    for mirror in mirrors:
        mirror.close()

    children = _children(client, parent)
    assert sorted(int(r.data.tags[TAG_TRIAL]) for r in children) == [0, 1, 2, 3, 4]
    client.set_terminated(parent)


def test_half_written_child_completed(client: MlflowClient) -> None:
    experiment_id = client.create_experiment("half")
    parent = client.create_run(experiment_id).info.run_id
    client.create_run(experiment_id, tags={TAG_PARENT: parent, TAG_TRIAL: "0"})
    mirror = StudyMirror(MlflowClient(), experiment_id=experiment_id, parent_run_id=parent, study_name="s")

    mirror.submit(TrialRecord(number=0, state=optuna.trial.TrialState.COMPLETE, params={"x": 1}, metrics={"m": 1.0}, tags={}))
    mirror.close()

    children = _children(client, parent)
    assert len(children) == 1
    assert children[0].info.status == "FINISHED"
    assert children[0].data.params == {"x": "1"}
    client.set_terminated(parent)
