"""TuneConfig: parsing of loosely typed values and validation before the study."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlflow_hpo import ConfigError, TuneConfig
from mlflow_hpo.config import parse_bool


def test_from_mapping_parses_mlflow_run_spellings() -> None:
    config = TuneConfig.from_mapping(
        {"timeout": "5", "test_size": "2e-1", "n_trials": "30", "n_folds": "5.0", "seed": "7"}
    )

    assert config.timeout == 5.0
    assert config.test_size == pytest.approx(0.2)
    assert config.n_trials == 30
    assert config.n_folds == 5
    assert config.seed == 7


def test_timeout_zero_means_no_time_limit() -> None:
    assert TuneConfig.from_mapping({"timeout": "0"}).timeout is None


@pytest.mark.parametrize("text", ["true", "True", "1", "yes", "on", "Y", "t"])
def test_parse_bool_accepts_true_spellings(text: str) -> None:
    assert parse_bool("staged", text) is True


@pytest.mark.parametrize("text", ["false", "FALSE", "0", "no", "off", "n", ""])
def test_parse_bool_accepts_false_spellings(text: str) -> None:
    assert parse_bool("staged", text) is False


def test_parse_bool_rejects_other_text() -> None:
    with pytest.raises(ConfigError, match=r"staged must be true or false, got staged='maybe'"):
        parse_bool("staged", "maybe")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"n_trials": "0"}, r"n_trials must be at least 1, got n_trials=0"),
        ({"n_trials": "2.5"}, r"n_trials must be a whole number, got n_trials='2.5'"),
        ({"n_trials": "many"}, r"n_trials must be an integer"),
        ({"timeout": "-5"}, r"timeout must be a positive number of seconds, got timeout=-5.0"),
        ({"timeout": "nan"}, r"timeout must be a finite number"),
        ({"n_folds": "1"}, r"n_folds must be at least 2, got n_folds=1; use 5 or more"),
        ({"test_size": "0.9"}, r"test_size must be a fraction in \(0, 0.5\], got test_size=0.9"),
        ({"model": "catboost"}, r"unknown model 'catboost'; choose one of: lightgbm, xgboost"),
        ({"task": "ranking"}, r"unknown task 'ranking'"),
        ({"strategy": "bayes"}, r"unknown strategy 'bayes'"),
        ({"cv": "loo"}, r"unknown cv 'loo'"),
        ({"pruner": "asha"}, r"unknown pruner 'asha'"),
        ({"n_trials": "", "timeout": "0"}, r"n_trials and timeout are both unset"),
        ({"cv": "group"}, r"cv=group needs the column that holds the groups"),
        ({"time_column": "day", "cv": "kfold"}, r"cv='kfold' would shuffle time-ordered rows"),
        ({"colour": "red"}, r"unknown option 'colour'"),
    ],
)
def test_invalid_values_raise_config_error(values: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TuneConfig.from_mapping(values)


def test_config_file_values_apply_and_explicit_values_win(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text("model: xgboost\nn_trials: 12\nseed: 3\n")

    config = TuneConfig.from_mapping({"config": str(path), "model": "lightgbm", "seed": "9"})

    assert config.n_trials == 12
    assert config.seed == 9
    # "lightgbm" is the default, so it does not override the file's choice.
    assert config.model == "xgboost"


def test_config_file_space_section_becomes_space_spec(tmp_path: Path) -> None:
    path = tmp_path / "study.yaml"
    path.write_text("space:\n  C: {type: float, low: 0.01, high: 10, log: true}\n")

    config = TuneConfig.from_mapping({"config": str(path)})

    assert config.space_spec == {"C": {"type": "float", "low": 0.01, "high": 10, "log": True}}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("model: [lightgbm\n", r"is not valid YAML"),
        ("- lightgbm\n", r"must contain a mapping of option names to values, got list"),
        ("modle: lightgbm\n", r"has unknown option 'modle'"),
    ],
)
def test_bad_config_file_raises_config_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "study.yaml"
    path.write_text(content)

    with pytest.raises(ConfigError, match=message):
        TuneConfig.from_mapping({"config": str(path)})


def test_missing_config_file_raises_config_error() -> None:
    with pytest.raises(ConfigError, match=r"config file not found: config='nope.yaml'"):
        TuneConfig.from_mapping({"config": "nope.yaml"})
