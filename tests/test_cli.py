"""The mlflow-hpo console script: a working run and one-line errors with exit status 2."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest

from mlflow_hpo.cli import EXIT_BAD_INPUT, main


def _all_runs() -> list[mlflow.entities.Run]:
    client = mlflow.MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments) if experiments else []


@pytest.fixture
def one_class_csv(tmp_path: Path) -> Path:
    path = tmp_path / "one_class.csv"
    pd.DataFrame({"x": range(40), "label": ["ham"] * 40}).to_csv(path, index=False)
    return path


@pytest.fixture
def empty_csv(tmp_path: Path) -> Path:
    path = tmp_path / "empty.csv"
    path.write_text("x,label\n")
    return path


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--data", "nowhere.csv"], "data file not found: data='nowhere.csv'"),
        (["--target", "tumour"], "target='tumour' is not a column of data='sklearn:breast_cancer'"),
        (["--model", "catboost"], "unknown model 'catboost'"),
        (["--metric", "auc"], "unknown metric 'auc'"),
        (["--metric", "r2"], "metric='r2' scores regression but the task is binary"),
        (["--n_trials", "0"], "n_trials must be at least 1, got n_trials=0"),
        (["--timeout", "-3"], "timeout must be a positive number of seconds, got timeout=-3.0"),
        (["--data", "{one_class}", "--target", "label"], "has a single class ('ham')"),
        (["--data", "{empty}", "--target", "label"], "has no rows"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    arguments: list[str],
    message: str,
    one_class_csv: Path,
    empty_csv: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    resolved = [a.format(one_class=one_class_csv, empty=empty_csv) for a in arguments]

    status = main(["tune", *resolved])

    err_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mlflow-hpo: error:")]
    assert status == EXIT_BAD_INPUT
    assert len(err_lines) == 1
    assert message in err_lines[0]
    assert [r for r in _all_runs() if r.info.status == "RUNNING"] == []


def test_tune_command_prints_result_line(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        ["tune", "--data", "sklearn:iris", "--model", "logistic_regression", "--n_trials", "2", "--register_model", ""]
    )

    out = capsys.readouterr().out
    assert status == 0
    assert "best CV neg_log_loss" in out
    runs = _all_runs()
    assert len(runs) == 3
    assert {r.info.status for r in runs} == {"FINISHED"}
