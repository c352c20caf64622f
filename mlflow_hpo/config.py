"""Typed, validated configuration of one tuning job.

`TuneConfig` is the single object that every way in (MLproject, console
script, Python API, YAML file) builds before anything else runs. Checks that
need only the configuration itself run in `__post_init__`; checks that need
the data (columns, class counts) run in `mlflow_hpo.data` before the study.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mlflow_hpo._errors import ConfigError

TASKS = ("auto", "binary", "multiclass", "regression")
MODELS = (
    "lightgbm",
    "xgboost",
    "hist_gradient_boosting",
    "random_forest",
    "extra_trees",
    "logistic_regression",
    "ridge",
    "elastic_net",
    "svm",
)
STRATEGIES = ("auto", "grid", "random", "tpe", "nsga2")
CV_SCHEMES = ("auto", "stratified", "kfold", "group", "time_series", "repeated")
PRUNERS = ("auto", "median", "hyperband", "wilcoxon", "none")
IMPORTANCE_EVALUATORS = ("ped_anova", "fanova", "none")

_TRUE = {"true", "1", "yes", "y", "on", "t"}
_FALSE = {"false", "0", "no", "n", "off", "f", ""}


@dataclasses.dataclass(frozen=True)
class TuneConfig:
    """Configuration of one tuning job.

    Args:
        data: ``sklearn:<name>`` for a dataset that scikit-learn ships, or a
            path to a CSV or Parquet file.
        target: Target column. Empty means the dataset's own target for
            ``sklearn:`` data and the last column for files.
        task: ``auto`` detects binary, multiclass or regression from the target.
        model: Model family; see ``MODELS``.
        metric: scikit-learn scorer name, or ``auto`` (``roc_auc`` for binary,
            ``neg_log_loss`` for multiclass, ``neg_root_mean_squared_error``
            for regression). Comma-separated names make a multi-objective study.
        strategy: ``auto``, ``grid``, ``random``, ``tpe`` or ``nsga2``.
        n_trials: Number of finished trials the study should hold; None with a
            timeout means "as many as fit".
        timeout: Wall-clock budget of the search in seconds; None for no limit.
        cv: Cross-validation scheme; ``auto`` picks it from the task and columns.
        n_folds: Number of folds, at least 2 (fewer than 5 warns).
        test_size: Fraction of rows held out for the final test, in (0, 0.5].
        time_column: Column that orders rows in time; enables time-series mode.
        group_column: Column whose groups must not span folds.
        gap: Rows left out between the training and the validation part of
            each time-series split (and before the held-out period), for
            targets that look ahead; time-series mode only. Default 0.
        nested_cv: Run the whole search again inside each outer fold of the
            training rows and report the outer-fold scores as the estimate of
            production performance. Costs ``n_folds`` extra searches.
        pruner: ``auto``, ``median``, ``hyperband``, ``wilcoxon`` or ``none``.
        seed: Seed of every random source.
        study_name: Optuna study name; empty creates a new, unique name.
        register_model: Registered model name; ``auto`` derives one from the
            dataset and model, empty skips registration.
        promote_margin: How much worse than the ``champion`` version the new
            version may score on the held-out rows and still take the
            ``champion`` alias, in the metric's units; at least 0, default 0.
        space: Path to a YAML or JSON search-space file, or empty.
        space_spec: Search-space mapping read from the ``space:`` section of a
            config file.
        staged: Tune in two stages that share the trial budget: first the
            tier-1 parameters with the rest at library defaults, then the
            rest with the stage-1 winners fixed.
        warm_start: Name of an earlier study in the same storage whose best
            configurations run first; its space must fit this one.
        n_jobs: Trials run in parallel threads of this process.
        workers: Local worker processes that run the trials; 1 runs them in
            this process.
        retry_failed: Run the parameters of trials whose process died once
            more, as new trials.
        early_stopping_rounds: Patience of boosters' early stopping.
        max_boost_rounds: Cap on boosting rounds; early stopping picks the rest.
        importance: Hyperparameter importance evaluator, or ``none``.
        select: Rule that picks the trial to refit in a multi-objective study:
            ``knee`` (default), ``max:<objective>`` or ``min:<objective>``,
            optionally followed by bounds such as ``|latency<5``.
        experiment_name: MLflow experiment for a run that this job creates.
    """

    data: str = "sklearn:breast_cancer"
    target: str = ""
    task: str = "auto"
    model: str = "lightgbm"
    metric: str = "auto"
    strategy: str = "auto"
    n_trials: int | None = 30
    timeout: float | None = None
    cv: str = "auto"
    n_folds: int = 5
    test_size: float = 0.2
    time_column: str = ""
    group_column: str = ""
    gap: int = 0
    nested_cv: bool = False
    pruner: str = "auto"
    seed: int = 42
    study_name: str = ""
    register_model: str = "auto"
    promote_margin: float = 0.0
    space: str = ""
    space_spec: Mapping[str, Any] | None = None
    staged: bool = False
    warm_start: str = ""
    n_jobs: int = 1
    workers: int = 1
    retry_failed: bool = False
    early_stopping_rounds: int = 50
    max_boost_rounds: int = 2000
    importance: str = "ped_anova"
    select: str = "knee"
    experiment_name: str = ""

    def __post_init__(self) -> None:
        _check_choice("task", self.task, TASKS)
        _check_choice("model", self.model, MODELS)
        _check_choice("strategy", self.strategy, STRATEGIES)
        _check_choice("cv", self.cv, CV_SCHEMES)
        _check_choice("pruner", self.pruner, PRUNERS)
        _check_choice("importance", self.importance, IMPORTANCE_EVALUATORS)
        if not self.data:
            raise ConfigError("data must not be empty; use sklearn:breast_cancer or a CSV/Parquet path.")
        if self.n_trials is None and self.timeout is None:
            raise ConfigError(
                "n_trials and timeout are both unset, so the study would never end; "
                "set n_trials=30 or timeout=600."
            )
        if self.n_trials is not None and self.n_trials < 1:
            raise ConfigError(f"n_trials must be at least 1, got n_trials={self.n_trials}; use 30 or more.")
        if self.timeout is not None and not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise ConfigError(
                f"timeout must be a positive number of seconds, got timeout={self.timeout}; "
                "use 600 for ten minutes, or 0 for no time limit."
            )
        if self.n_folds < 2:
            raise ConfigError(f"n_folds must be at least 2, got n_folds={self.n_folds}; use 5 or more.")
        if not 0.0 < self.test_size <= 0.5:
            raise ConfigError(
                f"test_size must be a fraction in (0, 0.5], got test_size={self.test_size}; use 0.2."
            )
        if not (self.promote_margin >= 0 and math.isfinite(self.promote_margin)):
            raise ConfigError(
                f"promote_margin must be a number of at least 0, got promote_margin={self.promote_margin}; use 0."
            )
        if self.n_jobs < 1:
            raise ConfigError(f"n_jobs must be at least 1, got n_jobs={self.n_jobs}; use 1.")
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got workers={self.workers}; use 1.")
        if self.warm_start and self.warm_start == self.study_name:
            raise ConfigError(
                f"warm_start={self.warm_start!r} names the study itself; resuming it needs no warm start, "
                "so pass the name of an earlier study or leave warm_start empty."
            )
        if self.early_stopping_rounds < 1:
            raise ConfigError(
                f"early_stopping_rounds must be at least 1, got {self.early_stopping_rounds}; use 50."
            )
        if self.max_boost_rounds < 1:
            raise ConfigError(f"max_boost_rounds must be at least 1, got {self.max_boost_rounds}; use 2000.")
        if self.time_column and self.group_column:
            raise ConfigError(
                f"time_column={self.time_column!r} and group_column={self.group_column!r} "
                "cannot be combined; set only one of them."
            )
        if self.time_column and self.cv not in ("auto", "time_series"):
            raise ConfigError(
                f"cv={self.cv!r} would shuffle time-ordered rows of time_column={self.time_column!r}; "
                "use cv=time_series or cv=auto."
            )
        if self.gap < 0:
            raise ConfigError(f"gap must be 0 or more rows, got gap={self.gap}; use gap=0 for no gap.")
        if self.gap and not self.time_column:
            raise ConfigError(
                f"gap={self.gap} applies only to time-ordered rows; set time_column=<column> or use gap=0."
            )
        if self.cv == "group" and not self.group_column:
            raise ConfigError("cv=group needs the column that holds the groups; set group_column=<column>.")
        if self.cv == "time_series" and not self.time_column:
            raise ConfigError("cv=time_series needs the column that orders rows; set time_column=<column>.")
        for name in self.metrics:
            if not name:
                raise ConfigError(f"metric={self.metric!r} contains an empty name; use e.g. metric=roc_auc.")

    @property
    def metrics(self) -> tuple[str, ...]:
        """Metric names, in objective order."""
        return tuple(part.strip() for part in self.metric.split(","))

    @property
    def is_multi_objective(self) -> bool:
        return len(self.metrics) > 1

    def replace(self, **changes: Any) -> TuneConfig:
        """Return a copy with some fields changed, validated again."""
        return dataclasses.replace(self, **changes)

    def to_params(self) -> dict[str, str]:
        """Return the configuration as MLflow params (strings, no space mapping)."""
        params: dict[str, str] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "space_spec":
                continue
            params[field.name] = "" if value is None else str(value)
        return params

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> TuneConfig:
        """Build a config from loosely typed values, such as ``mlflow run`` parameters.

        Strings are converted to each field's type: ``"2e-1"`` becomes 0.2,
        ``"yes"`` becomes True, and an empty string or ``0`` for ``timeout``
        means no time limit. If ``config`` names a YAML file, its values are
        read first and values given here that differ from the defaults win.
        """
        values = dict(values)
        config_path = values.pop("config", "") or ""
        merged: dict[str, Any] = {}
        if config_path:
            merged.update(load_config_file(config_path))
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        for key, raw in values.items():
            if key not in defaults:
                raise ConfigError(f"unknown option {key!r}; valid options are: {', '.join(sorted(defaults))}.")
            value = _convert(key, raw, defaults[key])
            if key in merged and value == defaults[key]:
                continue
            merged[key] = value
        return cls(**merged)


def load_config_file(path: str) -> dict[str, Any]:
    """Read a YAML (or JSON) config file into typed values."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file not found: config={path!r}; pass the path of an existing YAML file.")
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        first_line = str(exc).splitlines()[0]
        raise ConfigError(f"config file {path!r} is not valid YAML ({first_line}); fix the syntax.") from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"config file {path!r} must contain a mapping of option names to values, "
            f"got {type(raw).__name__}; write 'model: lightgbm' style lines."
        )
    defaults = {f.name: f.default for f in dataclasses.fields(TuneConfig)}
    result: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "space":
            if isinstance(value, str):
                result["space"] = value
            elif isinstance(value, dict):
                result["space_spec"] = value
            else:
                raise ConfigError(
                    f"config file {path!r}: 'space' must be a mapping or a file path, got {type(value).__name__}."
                )
            continue
        if key not in defaults or key == "space_spec":
            raise ConfigError(
                f"config file {path!r} has unknown option {key!r}; valid options are: {', '.join(sorted(defaults))}."
            )
        result[key] = _convert(key, value, defaults[key])
    return result


def parse_bool(name: str, raw: Any) -> bool:
    """Parse the usual spellings of a boolean (true/false, yes/no, 1/0, on/off)."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {name}={raw!r}; use true or false.")


def _convert(name: str, raw: Any, default: Any) -> Any:
    text = "" if raw is None else str(raw).strip().lower()
    if name == "n_trials" and text in ("", "none"):
        return None
    if name == "timeout" and text in ("", "none", "0", "0.0"):
        return None
    if name == "n_trials":
        return _parse_int(name, raw)
    if name == "timeout":
        return _parse_float(name, raw)
    if isinstance(default, bool):
        return parse_bool(name, raw)
    if isinstance(default, int):
        return _parse_int(name, raw)
    if isinstance(default, float):
        return _parse_float(name, raw)
    if raw is None:
        return default
    return str(raw).strip()


def _parse_int(name: str, raw: Any) -> int:
    if isinstance(raw, bool):
        raise ConfigError(f"{name} must be an integer, got {name}={raw!r}; use e.g. {name}=5.")
    if isinstance(raw, int):
        return raw
    text = str(raw).strip()
    try:
        number = float(text)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {name}={raw!r}; use e.g. {name}=5.") from None
    if not number.is_integer():
        raise ConfigError(f"{name} must be a whole number, got {name}={raw!r}; use e.g. {name}={round(number)}.")
    return int(number)


def _parse_float(name: str, raw: Any) -> float:
    try:
        value = float(str(raw).strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {name}={raw!r}; use e.g. {name}=0.2.") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {name}={raw!r}.")
    return value


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}.")
