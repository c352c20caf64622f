"""tune() end to end on real data: the run tree, statuses, artifacts and the registered model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient
from sklearn.metrics import roc_auc_score

import mlflow_hpo.study as study_module
from mlflow_hpo import TuneConfig, tune
from mlflow_hpo.data import prepare
from mlflow_hpo.storage import open_storage, storage_url
from mlflow_hpo.tracking import TAG_PARENT, TAG_TRIAL

PARENT_ARTIFACTS = {"best_config.json", "trials.csv", "summary.md", "top_trials.md"}


def _children(client: MlflowClient, parent_run_id: str) -> list[mlflow.entities.Run]:
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs([experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{parent_run_id}'")


def _study_trials(study_name: str) -> list[optuna.trial.FrozenTrial]:
    storage = open_storage(storage_url(mlflow.get_tracking_uri()))
    return optuna.load_study(study_name=study_name, storage=storage).get_trials()


@pytest.fixture(scope="module")
def lightgbm_result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One small LightGBM study on breast_cancer, shared by the run-tree tests."""
    folder = tmp_path_factory.mktemp("lightgbm-study")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    result = tune(TuneConfig(n_trials=4, register_model="cancer-lgbm", seed=3, n_folds=3))
    trials = _study_trials(result.study_name)
    return {"uri": uri, "result": result, "trials": trials}


@pytest.fixture
def lightgbm_client(lightgbm_result: dict[str, Any]) -> MlflowClient:
    mlflow.set_tracking_uri(lightgbm_result["uri"])
    return MlflowClient(lightgbm_result["uri"])


def test_one_child_run_per_trial(lightgbm_result: dict[str, Any], lightgbm_client: MlflowClient) -> None:
    result = lightgbm_result["result"]
    children = _children(lightgbm_client, result.parent_run_id)

    numbers = sorted(int(run.data.tags[TAG_TRIAL]) for run in children)
    assert numbers == [t.number for t in lightgbm_result["trials"]]
    assert {run.info.status for run in children} == {"FINISHED"}
    assert {run.info.run_name for run in children} == {f"trial-{n:04d}" for n in numbers}


def test_child_params_are_exactly_the_trial_params(
    lightgbm_result: dict[str, Any], lightgbm_client: MlflowClient
) -> None:
    result = lightgbm_result["result"]
    by_number = {t.number: t for t in lightgbm_result["trials"]}
    children = _children(lightgbm_client, result.parent_run_id)

    key_sets = {frozenset(run.data.params) for run in children}
    assert len(key_sets) == 1
    for run in children:
        trial = by_number[int(run.data.tags[TAG_TRIAL])]
        assert run.data.params == {k: str(v) for k, v in trial.params.items()}
        assert run.data.metrics["cv_roc_auc_mean"] == pytest.approx(trial.value)
        assert "cv_roc_auc_fold2" in run.data.metrics
        assert run.data.metrics["best_iteration_median"] >= 1


def test_parent_run_holds_study_configuration_only(
    lightgbm_result: dict[str, Any], lightgbm_client: MlflowClient
) -> None:
    result = lightgbm_result["result"]
    parent = lightgbm_client.get_run(result.parent_run_id)

    assert parent.info.status == "FINISHED"
    assert parent.data.params["model"] == "lightgbm"
    assert parent.data.params["n_trials"] == "4"
    assert not set(parent.data.params) & set(result.best_params)
    assert parent.data.tags["mlflow_hpo.study_name"] == result.study_name
    assert parent.data.tags["mlflow_hpo.sampler"] == "TPESampler"
    assert "test_roc_auc" in parent.data.metrics
    assert "best_cv_roc_auc_mean" in parent.data.metrics
    history = lightgbm_client.get_metric_history(result.parent_run_id, "best_so_far")
    assert sorted(m.step for m in history) == [t.number for t in lightgbm_result["trials"]]
    values = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert values == sorted(values)


def test_parent_artifacts_describe_the_winner(
    lightgbm_result: dict[str, Any], lightgbm_client: MlflowClient, tmp_path: Any
) -> None:
    result = lightgbm_result["result"]
    names = {a.path for a in lightgbm_client.list_artifacts(result.parent_run_id)}
    assert names >= PARENT_ARTIFACTS
    plots = {a.path for a in lightgbm_client.list_artifacts(result.parent_run_id, "plots")}
    assert "plots/optimization_history.png" in plots

    local = mlflow.artifacts.download_artifacts(
        run_id=result.parent_run_id, artifact_path="best_config.json", dst_path=str(tmp_path)
    )
    best = json.loads(Path(local).read_text())
    assert best["params"] == result.best_params
    assert best["cv"]["mean"] == pytest.approx(result.best_cv_mean)
    assert best["replay_command"].startswith("mlflow run . --env-manager local")
    assert best["refit_n_estimators"] >= 1


def test_registered_version_predicts_on_held_out_rows(
    lightgbm_result: dict[str, Any], lightgbm_client: MlflowClient
) -> None:
    result = lightgbm_result["result"]
    assert result.registered_model == "cancer-lgbm"
    uri = f"models:/cancer-lgbm/{result.registered_version}"
    dataset = prepare(TuneConfig(seed=3, n_folds=3))
    rows = dataset.preprocessor.serving_frame(dataset.raw_test)

    labels = mlflow.pyfunc.load_model(uri).predict(rows)
    probabilities = mlflow.sklearn.load_model(uri).predict_proba(rows)[:, 1]

    assert len(labels) == len(dataset.raw_test)
    assert set(np.unique(labels)) <= {0, 1}
    assert roc_auc_score(dataset.y_test, probabilities) == pytest.approx(result.test_score)


def test_same_seed_gives_same_trials() -> None:
    config = TuneConfig(data="sklearn:iris", model="logistic_regression", n_trials=4, register_model="", seed=11)

    first = tune(config)
    second = tune(config)

    first_params = [t.params for t in _study_trials(first.study_name)]
    second_params = [t.params for t in _study_trials(second.study_name)]
    assert first_params == second_params
    assert first.study_name != second.study_name


def test_study_has_one_parent_with_or_without_open_run(client: MlflowClient) -> None:
    config = TuneConfig(data="sklearn:iris", model="logistic_regression", n_trials=3, register_model="")

    outside = tune(config)
    with mlflow.start_run() as open_run:
        inside = tune(config)

    assert inside.parent_run_id == open_run.info.run_id
    assert outside.parent_run_id != inside.parent_run_id
    for result in (outside, inside):
        assert len(_children(client, result.parent_run_id)) == 3
    roles = [r.data.tags.get("mlflow_hpo.role") for r in client.search_runs(["0"])]
    assert roles.count("study") == 2


def test_failing_trial_fails_only_its_child(client: MlflowClient, monkeypatch: pytest.MonkeyPatch) -> None:
    real_evaluate = study_module.evaluate
    parent_status_during_later_trials: list[str] = []

    def evaluate_with_fault(job: Any, trial: optuna.Trial | None, kwargs: dict[str, Any]) -> Any:
        assert trial is not None
        if trial.number == 3:
            raise ValueError("injected fault in trial 3")
        if trial.number > 3:
            parent_id = trial.study.user_attrs["mlflow_parent_run_id"]
            parent_status_during_later_trials.append(client.get_run(parent_id).info.status)
        return real_evaluate(job, trial, kwargs)

    monkeypatch.setattr(study_module, "evaluate", evaluate_with_fault)

    result = tune(
        TuneConfig(data="sklearn:iris", model="logistic_regression", n_trials=10, pruner="none", register_model="")
    )

    children = {int(r.data.tags[TAG_TRIAL]): r for r in _children(client, result.parent_run_id)}
    assert sorted(children) == list(range(10))
    assert children[3].info.status == "FAILED"
    assert "injected fault in trial 3" in children[3].data.tags["mlflow_hpo.fail_reason"]
    assert {children[n].info.status for n in children if n != 3} == {"FINISHED"}
    assert parent_status_during_later_trials == ["RUNNING"] * 6
    assert client.get_run(result.parent_run_id).info.status == "FINISHED"
    assert result.n_trials_by_state == {"COMPLETE": 9, "FAIL": 1}


@pytest.mark.parametrize("model", ["xgboost", "random_forest", "extra_trees", "hist_gradient_boosting", "svm"])
def test_each_model_family_tunes_multiclass_data(model: str, client: MlflowClient) -> None:
    result = tune(
        TuneConfig(data="sklearn:wine", model=model, n_trials=2, n_folds=3, pruner="none", register_model="")
    )

    assert result.n_trials_by_state == {"COMPLETE": 2}
    assert result.metric == "neg_log_loss"
    assert result.test_score < 0


@pytest.mark.parametrize("model", ["ridge", "elastic_net", "lightgbm"])
def test_regression_models_tune_diabetes(model: str) -> None:
    result = tune(
        TuneConfig(data="sklearn:diabetes", model=model, n_trials=2, n_folds=3, pruner="none", register_model="")
    )

    assert result.metric == "neg_root_mean_squared_error"
    assert result.n_trials_by_state == {"COMPLETE": 2}
    assert -100 < result.test_score < -30


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_best_so_far_between_refreshes(direction: str) -> None:
    from mlflow_hpo.study import BestSoFar

    study = optuna.create_study(direction=direction)
    best = BestSoFar(refresh_every=3)
    values = [0.5, 0.7, 0.2, 0.9, 0.1, 0.8]
    seen = []
    for value in values:
        study.add_trial(optuna.trial.create_trial(value=value))
        seen.append(best.update(study, study.trials[-1]))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, value=5.0))
    seen.append(best.update(study, study.trials[-1]))

    pick = max if direction == "maximize" else min
    expected = [pick(values[: k + 1]) for k in range(len(values))]
    assert seen == expected + [expected[-1]]


def test_best_so_far_refresh_reads_storage() -> None:
    from mlflow_hpo.study import BestSoFar

    study = optuna.create_study(direction="maximize")
    best = BestSoFar(refresh_every=3)
    study.add_trial(optuna.trial.create_trial(value=0.5))
    assert best.update(study, study.trials[-1]) == 0.5

    study.add_trial(optuna.trial.create_trial(value=0.9))  # finished by another process
    seen = []
    for _ in range(3):
        study.add_trial(optuna.trial.create_trial(value=0.6))
        seen.append(best.update(study, study.trials[-1]))

    assert seen == [0.6, 0.6, 0.9]
