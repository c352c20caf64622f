"""Nested cross-validation: a search per outer fold, reported beside best CV and held-out scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from mlflow_hpo import TuneConfig
from mlflow_hpo.cli import main
from mlflow_hpo.nested import NestedResult, OuterFold, _inner_job, outer_splitter
from mlflow_hpo.study import plan
from mlflow_hpo.tracking import TAG_PARENT


def _fold(fold: int, outer: float, inner: float) -> OuterFold:
    return OuterFold(fold, outer, inner, {"learning_rate": 0.1}, 50, 300, 100)


def test_nested_metric_names_distinct() -> None:
    result = NestedResult("stratified", (_fold(0, 0.90, 0.95), _fold(1, 0.80, 0.93)))

    metrics = result.metrics("roc_auc")

    assert metrics == {
        "nested_outer_roc_auc_mean": pytest.approx(0.85),
        "nested_outer_roc_auc_std": pytest.approx(0.05),
        "nested_inner_best_roc_auc_mean": pytest.approx(0.94),
        "nested_outer_roc_auc_fold0": 0.90,
        "nested_outer_roc_auc_fold1": 0.80,
    }


def test_outer_split_drops_repeats() -> None:
    job = plan(TuneConfig(cv="repeated", n_folds=4, seed=1))

    outer = outer_splitter(job)

    assert job.splitter.n_splits == 12
    assert outer.scheme == "stratified"
    assert outer.n_splits == 4


def test_inner_search_sees_outer_training_rows_only() -> None:
    job = plan(TuneConfig(cv="stratified", n_folds=5, seed=1))
    train_index, test_index = next(outer_splitter(job).splitter.split(job.dataset.X_train, job.dataset.y_train))

    inner = _inner_job(job, train_index)

    assert len(inner.dataset.X_train) == len(train_index)
    np.testing.assert_array_equal(inner.dataset.y_train, job.dataset.y_train[train_index])
    assert inner.dataset.X_test is job.dataset.X_test
    assert inner.strategy.sampler is not job.strategy.sampler


def test_nested_time_split_checked_before_study(
    tmp_path: Path, client: MlflowClient, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=200), "day": np.arange(200), "label": rng.integers(0, 2, 200)})
    frame.to_csv(tmp_path / "daily.csv", index=False)

    code = main(
        [
            "tune", "--data", str(tmp_path / "daily.csv"), "--target", "label", "--time_column", "day",
            "--n_folds", "5", "--gap", "4", "--nested_cv", "true",
        ]
    )

    error = capsys.readouterr().err
    assert code == 2
    assert "nested_cv=true: outer fold 0 keeps 22 training rows, too few for the inner folds" in error
    assert client.search_runs(["0"]) == []


@pytest.mark.slow
def test_nested_cv_runs_through_cli(client: MlflowClient) -> None:
    code = main(
        [
            "tune", "--n_trials", "2", "--cv", "stratified", "--n_folds", "3", "--max_boost_rounds", "30",
            "--nested_cv", "true", "--register_model", "", "--importance", "none",
        ]
    )

    assert code == 0
    runs = client.search_runs(["0"])
    parent = next(run for run in runs if TAG_PARENT not in run.data.tags)
    metrics = parent.data.metrics
    for key in (
        "best_cv_roc_auc_mean",
        "test_roc_auc",
        "cv_minus_test_roc_auc",
        "nested_outer_roc_auc_mean",
        "nested_outer_roc_auc_std",
        "nested_inner_best_roc_auc_mean",
    ):
        assert key in metrics
    assert len([run for run in runs if run.data.tags.get(TAG_PARENT) == parent.info.run_id]) == 2
    outer_scores = [metrics[f"nested_outer_roc_auc_fold{fold}"] for fold in range(3)]
    assert metrics["nested_outer_roc_auc_mean"] == pytest.approx(np.mean(outer_scores))

    folder = Path(client.download_artifacts(parent.info.run_id, ""))
    summary = (folder / "summary.md").read_text()
    assert "nested CV roc_auc, outer-fold mean (estimate of production performance)" in summary
    assert "held-out test roc_auc (refit winner, used once)" in summary
    nested = json.loads((folder / "best_config.json").read_text())["nested_cv"]
    assert nested["scheme"] == "stratified"
    assert [fold["outer_score"] for fold in nested["folds"]] == pytest.approx(outer_scores)
    n_training_rows = nested["folds"][0]["n_train_rows"] + nested["folds"][0]["n_test_rows"]
    assert n_training_rows == 455
