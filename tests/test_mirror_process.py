"""The mirror's writer process: child runs written outside the tuning process, and the way back to the thread."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from mlflow_hpo.tracking import TAG_PARENT, TAG_TRIAL, StudyMirror, TrialRecord


def _mirror(client: MlflowClient, process_after: int | None = 0) -> tuple[StudyMirror, str, str]:
    experiment_id = client.create_experiment("process")
    parent = client.create_run(experiment_id).info.run_id
    mirror = StudyMirror(
        MlflowClient(), experiment_id=experiment_id, parent_run_id=parent, study_name="process", process_after=process_after
    )
    return mirror, experiment_id, parent


def _record(number: int, **fields: object) -> TrialRecord:
    values: dict[str, object] = {
        "state": optuna.trial.TrialState.COMPLETE,
        "params": {"learning_rate": 0.1},
        "metrics": {"cv_mean": 0.5 + number / 100},
        "tags": {},
        "curves": {"learning_curve_auc": [0.6, 0.7, 0.8]},
        "parent_metrics": {"best_so_far": 0.9},
    }
    values.update(fields)
    return TrialRecord(number=number, **values)  # type: ignore[arg-type]


def _children(client: MlflowClient, experiment_id: str, parent: str) -> dict[int, object]:
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{parent}'")
    return {int(run.data.tags[TAG_TRIAL]): run for run in runs}


def test_process_writes_child_runs(client: MlflowClient) -> None:
    mirror, experiment_id, parent = _mirror(client)

    writer_pid = mirror.writer_pid
    for number in range(3):
        mirror.submit(_record(number))
    mirror.close()

    assert writer_pid != os.getpid()
    children = _children(client, experiment_id, parent)
    assert sorted(children) == [0, 1, 2]
    for number, run in children.items():
        assert run.info.status == "FINISHED"  # type: ignore[attr-defined]
        assert run.data.metrics["cv_mean"] == pytest.approx(0.5 + number / 100)  # type: ignore[attr-defined]
        assert run.data.params == {"learning_rate": "0.1"}  # type: ignore[attr-defined]
    curve = client.get_metric_history(children[0].info.run_id, "learning_curve_auc")  # type: ignore[attr-defined]
    assert [point.value for point in curve] == [0.6, 0.7, 0.8]
    assert len(client.get_metric_history(parent, "best_so_far")) == 3
    assert mirror.errors == 0
    client.set_terminated(parent)


def test_first_trials_written_from_this_process(client: MlflowClient) -> None:
    mirror, experiment_id, parent = _mirror(client, process_after=2)

    writers = []
    for number in range(4):
        writers.append(mirror.writer_pid)
        mirror.submit(_record(number))
        mirror.flush()
    mirror.close()

    assert writers[:2] == [os.getpid(), os.getpid()]
    assert writers[2] == writers[3] != os.getpid()
    assert sorted(_children(client, experiment_id, parent)) == [0, 1, 2, 3]
    client.set_terminated(parent)


def test_rewritten_keys_come_back_from_process(client: MlflowClient, tmp_path: Path) -> None:
    mirror, _, parent = _mirror(client)

    mirror.submit(_record(0, metrics={"cv_recall@k(fold:1)": 0.5}))
    mirror.close()

    mapping = json.loads(Path(client.download_artifacts(parent, "key_mapping.json", str(tmp_path))).read_text())
    assert list(mapping) == ["cv_recall@k(fold:1)"]
    client.set_terminated(parent)


def test_process_warnings_reach_this_log(client: MlflowClient, caplog: pytest.LogCaptureFixture) -> None:
    mirror, experiment_id, parent = _mirror(client)
    # A child that a crash left RUNNING, with a param the record disagrees with.
    half_written = client.create_run(experiment_id, tags={TAG_PARENT: parent, TAG_TRIAL: "0"}).info.run_id
    client.log_param(half_written, "learning_rate", "0.3")

    with caplog.at_level(logging.WARNING, logger="mlflow_hpo"):
        mirror.submit(_record(0))
        mirror.close()

    assert "already logged as '0.3'" in caplog.text
    assert client.get_run(half_written).info.status == "FINISHED"
    client.set_terminated(parent)


def test_killed_process_falls_back_to_thread(client: MlflowClient, caplog: pytest.LogCaptureFixture) -> None:
    mirror, experiment_id, parent = _mirror(client)
    mirror.submit(_record(0))
    mirror.flush()

    os.kill(mirror.writer_pid, signal.SIGKILL)
    with caplog.at_level(logging.WARNING, logger="mlflow_hpo"):
        mirror.submit(_record(1))
        mirror.close()

    assert sorted(_children(client, experiment_id, parent)) == [0, 1]
    assert "writer process stopped" in caplog.text
    assert mirror.errors == 0
    client.set_terminated(parent)
