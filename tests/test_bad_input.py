"""Malformed inputs through the CLI: one line naming the value and the fix, exit status 2, nothing changed."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from mlflow_hpo import cli
from tests.conftest import subprocess_env

TABLE = "a,b,c,label\n" + "".join(f"{i},{i % 7},{(i * 3) % 11},{i % 2}\n" for i in range(60))


@dataclasses.dataclass(frozen=True)
class Case:
    """One malformed input: ``args`` for ``mlflow-hpo tune``, files to create, env, expected text."""

    name: str
    args: tuple[str, ...]
    expected: str
    files: tuple[tuple[str, str], ...] = ()
    env: tuple[tuple[str, str], ...] = ()


def _case(name: str, args: str, expected: str, files: dict[str, str] | None = None, env: dict[str, str] | None = None) -> Case:
    return Case(name, tuple(args.split("\x00")) if "\x00" in args else tuple(args.split()), expected, tuple((files or {}).items()), tuple((env or {}).items()))


CSV = {"train.csv": TABLE}
CASES = [
    # files
    _case("missing_file", "--data missing.csv", "data file not found: data='missing.csv'"),
    _case("unsupported_suffix", "--data table.xlsx", "unsupported data file type '.xlsx'", {"table.xlsx": TABLE}),
    _case("empty_csv", "--data empty.csv", "data='empty.csv'", {"empty.csv": ""}),
    _case("header_only_csv", "--data header.csv", "data='header.csv'", {"header.csv": "a,b,label\n"}),
    _case("broken_parquet", "--data broken.parquet", "data='broken.parquet'", {"broken.parquet": "not parquet"}),
    _case("folder_as_data", "--data folder.csv", "data='folder.csv'", {"folder.csv/keep": ""}),
    _case("unknown_sklearn_set", "--data sklearn:nope", "unknown scikit-learn dataset 'nope'"),
    _case("empty_data", "--data=", "data must not be empty"),
    # columns and targets
    _case("unknown_target", "--data train.csv --target nope", "'nope'", CSV),
    _case("unknown_group_column", "--data train.csv --target label --group_column nope", "group_column='nope'", CSV),
    _case("unknown_time_column", "--data train.csv --target label --time_column nope", "time_column='nope'", CSV),
    _case("target_is_group", "--data train.csv --target label --group_column label", "target='label'", CSV),
    _case("only_target_column", "--data one.csv --target label", "no feature columns", {"one.csv": "label\n" + "1\n0\n" * 30}),
    _case("single_class", "--data single.csv --target label --task binary", "single class", {"single.csv": "a,label\n" + "1,1\n2,1\n" * 30}),
    _case("binary_with_three_classes", "--data train.csv --target b --task binary", "task=binary", CSV),
    _case("regression_on_text", "--data text.csv --target label --task regression", "task=regression needs a numeric target", {"text.csv": "a,label\n" + "1,x\n2,y\n" * 30}),
    _case("constant_regression_target", "--data const.csv --target label --task regression", "constant", {"const.csv": "a,label\n" + "1,5\n2,5\n" * 30}),
    _case("empty_target_column", "--data nan.csv --target label", "target column 'label' has no values", {"nan.csv": "a,label\n" + "1,\n2,\n" * 30}),
    _case("too_few_rows", "--data tiny.csv --target label", "too few", {"tiny.csv": "a,label\n1,0\n2,1\n3,0\n"}),
    _case("unknown_task", "--task ranking", "unknown task 'ranking'"),
    _case("unknown_metric", "--metric roc_auc_typo", "roc_auc_typo"),
    _case("regression_metric_for_classes", "--metric r2 --data sklearn:iris", "r2"),
    # models, strategies, spaces
    _case("unknown_model", "--model catboost_typo", "unknown model 'catboost_typo'"),
    _case("unknown_strategy", "--strategy bayes", "unknown strategy 'bayes'"),
    _case("unknown_pruner", "--pruner sometimes", "unknown pruner 'sometimes'"),
    _case("missing_space_file", "--space nospace.yaml", "nospace.yaml"),
    _case("space_not_mapping", "--space space.yaml", "space.yaml", {"space.yaml": "- just\n- a list\n"}),
    _case("space_unknown_parameter", "--model logistic_regression --space space.yaml", "space.yaml", {"space.yaml": "no_such_param:\n  type: float\n  low: 0.1\n  high: 1\n"}),
    _case("space_low_above_high", "--model logistic_regression --space space.yaml", "space.yaml", {"space.yaml": "C:\n  type: float\n  low: 10\n  high: 1\n"}),
    # budgets
    _case("zero_trials", "--n_trials 0", "n_trials must be at least 1"),
    _case("negative_trials", "--n_trials -5", "n_trials must be at least 1"),
    _case("fractional_trials", "--n_trials 2.5", "n_trials must be a whole number"),
    _case("text_trials", "--n_trials many", "n_trials must be an integer"),
    _case("negative_timeout", "--timeout -10", "timeout must be a positive number"),
    _case("text_timeout", "--timeout soon", "timeout must be a number"),
    _case("no_budget", "--n_trials none --timeout 0", "n_trials and timeout are both unset"),
    _case("zero_jobs", "--n_jobs 0", "n_jobs must be at least 1"),
    _case("zero_workers", "--workers 0", "workers must be at least 1"),
    _case("bad_retry_flag", "--retry_failed maybe", "retry_failed must be true or false"),
    # folds and splits
    _case("one_fold", "--n_folds 1", "n_folds must be at least 2"),
    _case("test_size_zero", "--test_size 0", "test_size must be a fraction"),
    _case("test_size_too_big", "--test_size 0.9", "test_size must be a fraction"),
    _case("unknown_cv", "--cv loo", "unknown cv 'loo'"),
    _case("group_cv_without_column", "--cv group", "cv=group needs the column"),
    _case("time_cv_without_column", "--cv time_series", "cv=time_series needs the column"),
    _case("time_and_group", "--data train.csv --target label --time_column a --group_column b", "cannot be combined", CSV),
    _case("shuffled_time_column", "--data train.csv --target label --time_column a --cv kfold", "cv='kfold' would shuffle", CSV),
    _case("more_folds_than_rows", "--data small.csv --target label --n_folds 40", "n_folds", {"small.csv": "a,label\n" + "".join(f"{i},{i % 2}\n" for i in range(30))}),
    # storage URLs
    _case("unsupported_storage_scheme", "", "unsupported storage URL 'redis://127.0.0.1:6379/0'", env={"MLFLOW_HPO_STORAGE": "redis://127.0.0.1:6379/0"}),
    _case("storage_folder", "", "is a folder", {"storage_dir/keep": ""}, {"MLFLOW_HPO_STORAGE": "storage_dir"}),
    _case("storage_missing_folder", "", "does not exist", env={"MLFLOW_HPO_STORAGE": "no/such/folder/study.journal"}),
    _case("storage_missing_database", "", "hpo_no_such_database", env={"MLFLOW_HPO_STORAGE": "postgresql://postgres:pw@127.0.0.1:5432/hpo_no_such_database"}),
    # config files
    _case("missing_config", "--config nothere.yaml", "config file not found: config='nothere.yaml'"),
    _case("invalid_yaml", "--config bad.yaml", "is not valid YAML", {"bad.yaml": "model: [lightgbm\n"}),
    _case("config_not_mapping", "--config list.yaml", "must contain a mapping", {"list.yaml": "- model\n"}),
    _case("config_unknown_option", "--config opts.yaml", "unknown option 'n_trees'", {"opts.yaml": "n_trees: 5\n"}),
    _case("config_bad_value", "--config opts.yaml", "n_folds must be an integer", {"opts.yaml": "n_folds: five\n"}),
]


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha1(path.read_bytes()).hexdigest()
        for path in folder.rglob("*")
        if path.is_file()
    }


def _prepare(case: Case, folder: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, content in case.files:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    for key, value in case.env:
        monkeypatch.setenv(key, value)
    return _snapshot(folder)


def _assert_nothing_left(folder: Path, before: dict[str, str]) -> None:
    after = _snapshot(folder)
    assert {name: digest for name, digest in after.items() if name in before} == before
    if (folder / "mlflow.db").exists():
        runs = mlflow.MlflowClient().search_runs(
            [e.experiment_id for e in mlflow.MlflowClient().search_experiments()], filter_string="attributes.status = 'RUNNING'"
        )
        assert runs == []


def test_corpus_is_large() -> None:
    assert len(CASES) >= 40
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_rejected(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    before = _prepare(case, tmp_path, monkeypatch)
    args = ["tune", "--n_trials", "2", "--register_model", "", *(a for a in case.args if a)]

    status = cli.main(args)

    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("mlflow-hpo: error:")]
    assert status == 2, err[-2000:]
    assert errors == [err.strip().splitlines()[-1]]
    assert case.expected in errors[0]
    assert any(word in errors[0] for word in ("; ", "use ", "choose ", "must ", "pass ", "set "))
    _assert_nothing_left(tmp_path, before)


SUBPROCESS_CASES = ["missing_file", "unknown_model", "unsupported_storage_scheme"]


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_bad_input_rejected_by_process(name: str, tracking_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    case = next(c for c in CASES if c.name == name)
    before = _prepare(case, tmp_path, monkeypatch)
    env = subprocess_env(tracking_store, **dict(case.env))

    completed = subprocess.run(
        [sys.executable, "-m", "mlflow_hpo", "tune", "--n_trials", "2", *case.args],
        env=env, capture_output=True, text=True, timeout=300,
    )

    last = completed.stderr.strip().splitlines()[-1]
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert last.startswith("mlflow-hpo: error:")
    assert case.expected in last
    _assert_nothing_left(tmp_path, before)
