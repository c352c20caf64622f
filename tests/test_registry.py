"""Logging, checking and registering the winner, on the per-test SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from mlflow_hpo import __version__
from mlflow_hpo.cli import main
from mlflow_hpo.config import TuneConfig
from mlflow_hpo.promotion import CHALLENGER, CHAMPION
from mlflow_hpo.registry import (
    TAG_COMMIT,
    TAG_DIGEST,
    TAG_PARENT,
    TAG_STUDY,
    TAG_TRAINING_DATASET,
    TAG_TRIAL,
    TAG_VERSION,
    RegistrationError,
    check_signature,
    input_example,
    log_and_register,
    smoke_test,
)
from mlflow_hpo.serving import TunedModel
from mlflow_hpo.study import plan
from tests._registry_tables import (
    fit_model,
    mixed_frame,
    new_parent,
    plan_job,
    register,
    write_table,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


def _signature_types(model_uri: str) -> dict[str, tuple[str, bool]]:
    inputs = mlflow.models.get_model_info(model_uri).signature.inputs.inputs
    return {spec.name: (str(getattr(spec.type, "name", None) or spec.type), spec.required) for spec in inputs}


def test_version_records_lineage_and_dataset(tmp_path: Path, client: mlflow.MlflowClient) -> None:
    job = plan_job(tmp_path)
    parent = new_parent(job)

    registration = log_and_register(fit_model(job), job, parent, 7)

    tags = client.get_model_version(registration.name, registration.version).tags
    assert tags[TAG_STUDY] == job.study_name
    assert tags[TAG_PARENT] == parent.run_id
    assert tags[TAG_TRIAL] == "7"
    assert tags[TAG_DIGEST] == job.dataset.digest
    assert tags[TAG_VERSION] == __version__
    if (REPO_ROOT / ".git").exists():
        assert len(tags[TAG_COMMIT]) == 40
    inputs = client.get_run(parent.run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    dataset = inputs[0].dataset
    assert dataset.digest == tags[TAG_TRAINING_DATASET]
    assert json.loads(dataset.profile)["num_rows"] == len(job.dataset.raw_train)
    assert [tag.value for tag in inputs[0].tags] == ["training"]


def test_registered_model_predicts_on_records(tmp_path: Path) -> None:
    job = plan_job(tmp_path)
    model = fit_model(job)
    registration = log_and_register(model, job, new_parent(job), 0)
    assert _signature_types(registration.model_uri) == {
        "x": ("double", True),
        "color": ("string", True),
        "count": ("Any", False),
        "flag": ("boolean", False),
        "k": ("long", True),
    }
    records = [
        {"x": 0.2, "color": "red", "count": 3, "flag": True, "k": 4},
        {"x": -1.3, "color": "purple", "count": None, "flag": None, "k": 0},
        {"x": 1.1, "color": None, "count": 1, "flag": False, "k": 9},
    ]
    champion = mlflow.pyfunc.load_model(f"models:/{registration.name}@{CHAMPION}")

    served = champion.predict(pd.DataFrame(records))
    served_without_nulls = champion.predict(pd.DataFrame(records[:1]))

    expected = model.predict(pd.DataFrame(records).assign(color=["red", None, None]))
    np.testing.assert_array_equal(np.asarray(served), expected)
    np.testing.assert_array_equal(np.asarray(served_without_nulls), expected[:1])


def test_all_missing_column_stops_registration(tmp_path: Path, client: mlflow.MlflowClient) -> None:
    frame = mixed_frame().assign(note=pd.Series([None] * 240, dtype=object))
    job = plan_job(tmp_path, frame)

    with pytest.raises(RegistrationError, match="feature column 'note' has no value in any training row"):
        register(job)

    assert client.search_registered_models() == []


def test_signature_without_a_column_is_rejected(tmp_path: Path) -> None:
    job = plan_job(tmp_path)
    served = job.dataset.preprocessor.serving_frame(job.dataset.raw_train)
    signature = mlflow.models.infer_signature(served.drop(columns=["x"]))

    with pytest.raises(RegistrationError, match="feature column 'x' is missing from the model signature"):
        check_signature(signature, job.dataset.preprocessor)


def test_rerun_adds_no_version(tmp_path: Path, client: mlflow.MlflowClient) -> None:
    job = plan_job(tmp_path)
    parent = new_parent(job)
    first = log_and_register(fit_model(job), job, parent, 0)

    again = log_and_register(fit_model(job), job, parent, 0)

    assert again.version == first.version
    assert again.reused
    assert not first.reused
    assert again.decision is not None
    assert again.decision.outcome == "kept"
    assert [str(v.version) for v in client.search_model_versions(f"name = '{first.name}'")] == [first.version]
    assert str(client.get_model_version_by_alias(first.name, CHAMPION).version) == first.version
    assert str(client.get_model_version_by_alias(first.name, CHALLENGER).version) == first.version
    assert again.is_challenger
    assert "(registered by an earlier run of this study), alias `challenger`" in "\n".join(again.summary_lines())


def test_rerun_leaves_challenger_on_newest(tmp_path: Path, client: mlflow.MlflowClient) -> None:
    job = plan_job(tmp_path)
    parent = new_parent(job)
    first = log_and_register(fit_model(job), job, parent, 0)
    newest = register(job, weak=True)

    again = log_and_register(fit_model(job), job, parent, 0)

    assert again.version == first.version
    assert not again.is_challenger
    assert str(client.get_model_version_by_alias("mixed", CHALLENGER).version) == newest.version
    assert "alias" not in "\n".join(again.summary_lines()).split("Champion gate")[0]


def test_registration_off_logs_the_model_only(tmp_path: Path, client: mlflow.MlflowClient) -> None:
    job = plan_job(tmp_path, register_model="")

    registration = register(job)

    assert registration.name == ""
    assert registration.version is None
    assert registration.model_uri.startswith("models:/")
    assert client.search_registered_models() == []


@pytest.mark.slow
def test_registration_error_exits_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], client: mlflow.MlflowClient
) -> None:
    frame = mixed_frame().assign(note=pd.Series([None] * 240, dtype=object))
    path = write_table(tmp_path, frame)
    args = ["tune", "--data", str(path), "--target", "y", "--model", "logistic_regression", "--n_trials", "1",
            "--n_folds", "2", "--importance", "none", "--register_model", "mixed"]

    status = main(args)

    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mlflow-hpo: error:")]
    assert status == 1
    assert len(errors) == 1
    assert errors[0].startswith("mlflow-hpo: error: feature column 'note' has no value in any training row")
    assert client.search_registered_models() == []
    runs = client.search_runs(["0"])
    assert {run.info.status for run in runs if not run.data.tags.get("mlflow.parentRunId")} == {"FAILED"}


def test_smoke_test_rejects_changed_predictions(tmp_path: Path) -> None:
    job = plan_job(tmp_path, register_model="")
    model = fit_model(job)
    registration = log_and_register(model, job, new_parent(job), 0)
    example = input_example(job)
    flipped = np.where(model.predict(example) == "yes", "no", "yes")

    with pytest.raises(RegistrationError, match="predicts differently on its input example after loading"):
        smoke_test(registration.model_uri, example, flipped)
    with pytest.raises(RegistrationError, match="failed to predict on its input example"):
        smoke_test(registration.model_uri, example.drop(columns=["x"]), model.predict(example))


def test_regression_winner_registers_and_gates(tmp_path: Path, client: mlflow.MlflowClient) -> None:
    job = plan(TuneConfig(data="sklearn:diabetes", model="ridge", n_trials=1, register_model="diabetes"))
    estimator = job.adapter.fit_final({}, job.context, job.dataset.X_train, job.dataset.y_train, None)
    model = TunedModel(job.dataset.preprocessor, estimator)

    registration = log_and_register(model, job, new_parent(job), 0)

    assert registration.decision is not None
    assert registration.decision.metric == "neg_root_mean_squared_error"
    assert registration.decision.candidate_score == pytest.approx(
        job.objective.scorer(estimator, job.dataset.X_test, job.dataset.y_test)
    )
    assert str(client.get_model_version_by_alias("diabetes", CHAMPION).version) == registration.version
