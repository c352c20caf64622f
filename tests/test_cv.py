"""Cross-validation schemes, checks before the study, inner early-stopping splits and the refit rule."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.datasets import make_classification
from sklearn.model_selection import KFold

from mlflow_hpo import TuneConfig
from mlflow_hpo._errors import ConfigError, TrialError
from mlflow_hpo.cli import main
from mlflow_hpo.cv import (
    CVResult,
    Splitter,
    check_seeding,
    choose_splitter,
    cross_validate,
    inner_split,
    refit_rounds,
)
from mlflow_hpo.data import prepare
from mlflow_hpo.metrics import resolve_objective
from mlflow_hpo.models import FitContext, FitResult, get_adapter
from mlflow_hpo.models._boosters import LightGBMAdapter
from mlflow_hpo.tracking import TAG_PARENT
from tests.conftest import subprocess_env

FAST = ["--n_trials", "2", "--max_boost_rounds", "30", "--register_model", "", "--importance", "none"]


def _table(path: Path, n_rows: int = 300, seed: int = 0) -> Path:
    """Write a binary table with a group column and a shuffled day column."""
    X, y = make_classification(n_rows, n_features=5, n_informative=3, random_state=seed)
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(5)])
    day_index = rng.permutation(n_rows)
    frame["t"] = day_index
    frame["day"] = (pd.Timestamp("2024-01-01") + pd.to_timedelta(day_index, unit="D")).strftime("%Y-%m-%d")
    frame["store"] = [f"s{i % 12}" for i in range(n_rows)]
    frame["label"] = y
    frame.to_csv(path, index=False)
    return path


def _context(cap: int = 40) -> FitContext:
    return FitContext(
        task="binary", n_classes=2, metric="roc_auc", seed=0, n_threads=1, early_stopping_rounds=5, max_boost_rounds=cap
    )


def test_inner_split_is_stratified_subset() -> None:
    y = np.array([0] * 80 + [1] * 20)
    train_index = np.arange(100)

    fit_index, val_index = inner_split(train_index, y, "binary", seed=0, time_ordered=False)

    assert set(fit_index).isdisjoint(val_index)
    assert set(fit_index) | set(val_index) == set(train_index)
    assert len(val_index) == 15
    assert int(y[val_index].sum()) == 3


def test_inner_split_time_keeps_latest_after_gap() -> None:
    train_index = np.arange(100)

    fit_index, val_index = inner_split(train_index, np.zeros(100), "regression", 0, time_ordered=True, gap=4)

    assert list(val_index) == list(range(85, 100))
    assert list(fit_index) == list(range(0, 81))


class _RecordingAdapter(LightGBMAdapter):
    def __init__(self) -> None:
        self.seen: list[tuple[set[int], set[int]]] = []

    def fit(self, kwargs, context, X_fit, y_fit, X_val=None, y_val=None, on_round=None) -> FitResult:  # type: ignore[no-untyped-def]
        assert X_val is not None
        self.seen.append((set(X_fit.index), set(X_val.index)))
        return super().fit(kwargs, context, X_fit, y_fit, X_val, y_val, on_round)


def test_early_stopping_never_sees_scoring_rows() -> None:
    X, y = make_classification(200, n_features=5, random_state=1)
    frame = pd.DataFrame(X)
    config = TuneConfig(cv="stratified", n_folds=4)
    splitter = choose_splitter(config, "binary", y, None)
    adapter = _RecordingAdapter()

    cross_validate(adapter, {}, _context(), frame, y, splitter, resolve_objective("roc_auc", "binary"))

    folds = list(splitter.splitter.split(frame, y))
    assert len(adapter.seen) == len(folds)
    for (fit_rows, val_rows), (train_index, test_index) in zip(adapter.seen, folds, strict=True):
        assert fit_rows.isdisjoint(test_index)
        assert val_rows.isdisjoint(test_index)
        assert fit_rows | val_rows == set(train_index)


@pytest.mark.parametrize("scheme", ["stratified", "kfold", "repeated"])
def test_splitters_seeded_and_repeatable(scheme: str) -> None:
    y = np.array([0, 1] * 150)
    config = TuneConfig(cv=scheme, seed=7)

    first = [t.tolist() for _, t in choose_splitter(config, "binary", y, None).splitter.split(y, y)]
    again = [t.tolist() for _, t in choose_splitter(config, "binary", y, None).splitter.split(y, y)]
    other_seed = choose_splitter(config.replace(seed=8), "binary", y, None)

    assert first == again
    assert first != [t.tolist() for _, t in other_seed.splitter.split(y, y)]
    assert choose_splitter(config, "binary", y, None).splitter.random_state == 7


def test_auto_repeats_kfold_for_small_data() -> None:
    splitter = choose_splitter(TuneConfig(), "binary", np.array([0, 1] * 150), None)

    assert splitter.scheme == "repeated"
    assert splitter.n_splits == 15


def test_unseeded_shuffle_rejected() -> None:
    with pytest.raises(ConfigError, match="shuffles with random_state=None"):
        check_seeding(Splitter("kfold", KFold(5, shuffle=True)))


def test_shuffled_time_rows_rejected() -> None:
    with pytest.raises(ConfigError, match="shuffles rows that are ordered in time"):
        check_seeding(Splitter("kfold", KFold(5, shuffle=True, random_state=0), time_ordered=True))


def test_time_series_split_never_shuffles(tmp_path: Path) -> None:
    data = _table(tmp_path / "daily.csv")
    config = TuneConfig(data=str(data), target="label", time_column="day", gap=3, n_folds=4)

    dataset = prepare(config)
    splitter = choose_splitter(config, dataset.task, dataset.y_train, None)

    assert splitter.time_ordered
    assert np.all(np.diff(dataset.X_train["t"].to_numpy()) > 0)
    for train_index, test_index in splitter.splitter.split(dataset.X_train):
        assert train_index.max() + 3 < test_index.min()


def test_held_out_is_latest_period(tmp_path: Path) -> None:
    data = _table(tmp_path / "daily.csv")
    config = TuneConfig(data=str(data), target="label", time_column="day", gap=3, test_size=0.2)

    dataset = prepare(config)

    assert len(dataset.X_test) == 60
    assert sorted(dataset.X_test["t"]) == list(range(240, 300))
    assert dataset.X_train["t"].max() == 236


def test_impossible_time_split_rejected_with_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _table(tmp_path / "daily.csv", n_rows=80)

    code = main(["tune", "--data", str(data), "--target", "label", "--time_column", "day", "--n_folds", "10", "--gap", "7"])

    error = capsys.readouterr().err
    assert code == 2
    assert "time_series split does not fit: 57 training rows with n_folds=10" in error
    assert "57 - 10*5 - gap=7 = 0 rows" in error
    assert MlflowClient().search_runs(["0"]) == []


def test_rare_class_rejected_before_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(["common", "medium", "rare", "very_rare"], [900, 80, 15, 3])
    frame = pd.DataFrame({"x0": rng.normal(size=998), "x1": rng.normal(size=998), "label": labels})
    frame.to_csv(tmp_path / "classes.csv", index=False)

    code = main(
        ["tune", "--data", str(tmp_path / "classes.csv"), "--target", "label", "--cv", "stratified", "--metric", "roc_auc_ovr"]
    )

    error = capsys.readouterr().err
    assert code == 2
    assert "smallest class has 2 training rows (class 0: 720, class 1: 64, class 2: 12, class 3: 2)" in error
    assert "lower n_folds to 2 or merge rare classes" in error
    assert MlflowClient().search_runs(["0"]) == []


def test_single_class_fold_fails_trial_with_reason() -> None:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(90, 3)))
    y = np.array([0] * 30 + [0, 1] * 30)
    splitter = Splitter("kfold", KFold(3))
    context = FitContext("binary", 2, "roc_auc", 0, 1, 5, 40)

    with pytest.raises(TrialError, match=r"fold 0 scored nan with roc_auc, because its 30 scoring rows hold a single class \(0\)"):
        cross_validate(get_adapter("logistic_regression", "binary"), {}, context, X, y, splitter, resolve_objective("roc_auc", "binary"))


def test_refit_rounds_median_scaled() -> None:
    result = CVResult(
        scores=(0.9,) * 5,
        best_iterations=(180, 240, 210, 600, 195),
        stopped_early=(True,) * 5,
        fit_rows=(680,) * 5,
    )

    rounds, rule = refit_rounds(result, n_train_rows=1000)

    assert rounds == round(210 * 1000 / 680)
    assert "median of fold best iterations [180, 240, 210, 600, 195] = 210" in rule
    assert "scaled by 1.471" in rule


def test_refit_rounds_when_no_fold_stopped() -> None:
    result = CVResult(scores=(0.9,) * 3, best_iterations=(300,) * 3, stopped_early=(False,) * 3, fit_rows=(500,) * 3)

    rounds, rule = refit_rounds(result, n_train_rows=800)

    assert rounds == 300
    assert rule == "no fold stopped early, so the refit uses the round cap"


@pytest.mark.slow
def test_console_script_time_series(tmp_path: Path, tracking_store: str) -> None:
    data = _table(tmp_path / "daily.csv")
    command = ["mlflow-hpo", "tune", "--data", str(data), "--target", "label", *FAST]
    command += ["--time_column", "day", "--gap", "3", "--n_folds", "4"]

    finished = subprocess.run(command, env=subprocess_env(tracking_store), capture_output=True, text=True, timeout=600)

    assert finished.returncode == 0, finished.stderr[-2000:]
    parent = _parent(MlflowClient(tracking_store))
    assert parent.data.tags["mlflow_hpo.cv"] == "time_series"
    assert parent.data.params["gap"] == "3"


def _parent(client: MlflowClient) -> mlflow.entities.Run:
    runs = client.search_runs(["0"], filter_string="tags.`mlflow_hpo.study_name` != ''")
    parents = [run for run in runs if TAG_PARENT not in run.data.tags]
    assert len(parents) == 1
    return parents[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("scheme", "extra"),
    [
        ("stratified", ["--cv", "stratified"]),
        ("kfold", ["--cv", "kfold"]),
        ("group", ["--cv", "group", "--group_column", "store"]),
        ("time_series", ["--cv", "time_series", "--time_column", "day", "--gap", "3"]),
        ("repeated", ["--cv", "repeated", "--n_folds", "3"]),
    ],
)
def test_scheme_runs_through_cli(scheme: str, extra: list[str], tmp_path: Path) -> None:
    data = _table(tmp_path / "table.csv")

    code = main(["tune", "--data", str(data), "--target", "label", *FAST, *extra])

    client = MlflowClient()
    parent = _parent(client)
    assert code == 0
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["mlflow_hpo.cv"] == scheme
    assert "best_cv_roc_auc_mean" in parent.data.metrics
    assert "test_roc_auc" in parent.data.metrics
    assert parent.data.tags["mlflow_hpo.refit_rule"]
    best_config = json.loads(Path(client.download_artifacts(parent.info.run_id, "best_config.json")).read_text())
    assert best_config["cv"]["scheme"] == scheme
    assert best_config["refit_rule"] == parent.data.tags["mlflow_hpo.refit_rule"]
    assert len(best_config["fold_best_iterations"]) == best_config["cv"]["n_splits"]
    children = client.search_runs(["0"], filter_string=f"tags.`{TAG_PARENT}` = '{parent.info.run_id}'")
    finished = [run for run in children if run.info.status == "FINISHED"]
    assert finished
    history = client.get_metric_history(finished[0].info.run_id, "learning_curve_auc")
    assert len(history) > 1
    assert [point.step for point in history] == list(range(len(history)))
