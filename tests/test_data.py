"""Loading, task detection, held-out split and the checks that run before the study."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlflow_hpo import ConfigError, TuneConfig
from mlflow_hpo.data import detect_task, prepare
from mlflow_hpo.metrics import resolve_objective


def _write_mixed_csv(path: Path, n_rows: int = 300, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "green", "blue"], size=n_rows).astype(object)
    colour[rng.random(n_rows) < 0.1] = None
    size = rng.normal(size=n_rows)
    size[rng.random(n_rows) < 0.1] = np.nan
    label = np.where((colour == "red") | (np.nan_to_num(size) > 0.5), "yes", "no")
    pd.DataFrame({"colour": colour, "size": size, "count": rng.integers(0, 5, n_rows), "label": label}).to_csv(
        path, index=False
    )
    return path


@pytest.mark.parametrize(
    ("values", "task"),
    [
        ([0, 1, 1, 0], "binary"),
        (["a", "b", "c", "a"], "multiclass"),
        ([1, 2, 3, 1, 2], "multiclass"),
        ([0.1, 2.5, 3.7, 1.2], "regression"),
        (list(range(100)), "regression"),
    ],
)
def test_detect_task_from_target(values: list[object], task: str) -> None:
    assert detect_task(pd.Series(values)) == task


def test_prepare_bundled_dataset_stratifies_held_out_split() -> None:
    dataset = prepare(TuneConfig(data="sklearn:breast_cancer", test_size=0.2))

    assert dataset.task == "binary"
    assert len(dataset.X_test) == pytest.approx(0.2 * 569, abs=1)
    train_share = dataset.y_train.mean()
    test_share = dataset.y_test.mean()
    assert abs(train_share - test_share) < 0.02


def test_prepare_csv_with_text_categories_and_missing_values(tmp_path: Path) -> None:
    path = _write_mixed_csv(tmp_path / "mixed.csv")
    raw = pd.read_csv(path)

    dataset = prepare(TuneConfig(data=str(path), target="label"))

    # pandas 3 reads text as the str dtype; the preprocessor turns it into categories.
    assert not pd.api.types.is_numeric_dtype(raw["colour"])
    assert isinstance(dataset.X_train["colour"].dtype, pd.CategoricalDtype)
    assert list(dataset.X_train["colour"].cat.categories) == ["blue", "green", "red"]
    assert dataset.X_train["size"].isna().any()
    assert dataset.X_train["count"].dtype == np.float64
    assert list(dataset.classes) == ["no", "yes"]  # type: ignore[arg-type]


def test_prepare_parquet_file(tmp_path: Path) -> None:
    csv_path = _write_mixed_csv(tmp_path / "mixed.csv")
    parquet_path = tmp_path / "mixed.parquet"
    pd.read_csv(csv_path).to_parquet(parquet_path)

    dataset = prepare(TuneConfig(data=str(parquet_path), target="label"))

    assert dataset.task == "binary"
    assert len(dataset.X_train) + len(dataset.X_test) == 300


def test_time_column_holds_out_latest_period(tmp_path: Path) -> None:
    n_rows = 200
    frame = pd.DataFrame(
        {
            "day": pd.date_range("2024-01-01", periods=n_rows, freq="D").astype(str),
            "x": np.arange(n_rows, dtype=float),
            "y": np.sin(np.arange(n_rows) / 7.0),
        }
    ).sample(frac=1.0, random_state=0)
    path = tmp_path / "daily.csv"
    frame.to_csv(path, index=False)

    dataset = prepare(TuneConfig(data=str(path), target="y", time_column="day", test_size=0.25))

    assert dataset.task == "regression"
    assert "day" not in dataset.X_train.columns
    assert dataset.X_test["x"].min() > dataset.X_train["x"].max()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (TuneConfig(data="missing.csv"), r"data file not found: data='missing.csv'"),
        (TuneConfig(data="sklearn:titanic"), r"unknown scikit-learn dataset 'titanic'"),
        (TuneConfig(data="sklearn:iris", target="petal"), r"target='petal' is not a column of data='sklearn:iris'"),
        (TuneConfig(data="sklearn:iris", task="binary"), r"task=binary but target 'target' has 3 classes"),
        (TuneConfig(data="sklearn:iris", group_column="kind"), r"group_column='kind' is not a column"),
    ],
)
def test_prepare_rejects_bad_input(config: TuneConfig, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        prepare(config)


def test_empty_table_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("a,b,label\n")

    with pytest.raises(ConfigError, match=r"has no rows"):
        prepare(TuneConfig(data=str(path), target="label"))


def test_single_class_target_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "one_class.csv"
    pd.DataFrame({"x": range(50), "label": ["spam"] * 50}).to_csv(path, index=False)

    with pytest.raises(ConfigError, match=r"target 'label' has a single class \('spam'\)"):
        prepare(TuneConfig(data=str(path), target="label", task="binary"))


def test_unreadable_file_type_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "table.xlsx"
    path.write_bytes(b"not a table")

    with pytest.raises(ConfigError, match=r"unsupported data file type '.xlsx'"):
        prepare(TuneConfig(data=str(path)))


@pytest.mark.parametrize(
    ("metric", "task", "message"),
    [
        ("r2", "binary", r"metric='r2' scores regression but the task is binary"),
        ("roc_auc", "regression", r"metric='roc_auc' scores classifiers but the task is regression"),
        ("roc_auc", "multiclass", r"use a multiclass variant such as roc_auc_ovr"),
        ("roc_acu", "binary", r"unknown metric 'roc_acu'.*did you mean roc_auc"),
    ],
)
def test_metric_must_fit_task(metric: str, task: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_objective(metric, task)


def test_metric_direction_comes_from_scorer() -> None:
    objective = resolve_objective("neg_log_loss", "binary")

    # scikit-learn scorers are "greater is better"; losses arrive negated.
    assert objective.direction == "maximize"
    assert objective.needs_proba
