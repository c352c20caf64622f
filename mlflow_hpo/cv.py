"""Splitter choice and cross-validated evaluation of one configuration.

Inside each training fold, an inner validation part (stratified for
classification, the latest rows in time-series mode) drives early stopping;
the fold's held-out part only scores. So the rows that score a fold never
choose its number of rounds.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import (
    GroupKFold,
    KFold,
    RepeatedKFold,
    RepeatedStratifiedKFold,
    StratifiedKFold,
    TimeSeriesSplit,
    train_test_split,
)

from mlflow_hpo._errors import ConfigError, TrialError
from mlflow_hpo.config import TuneConfig
from mlflow_hpo.metrics import Objective
from mlflow_hpo.models import FitContext, ModelAdapter, RoundCallback

_logger = logging.getLogger(__name__)

# Share of each training fold set aside to drive early stopping.
INNER_VALIDATION_FRACTION = 0.15
# Below this many training rows, "auto" repeats k-fold to steady the estimate.
SMALL_DATA_ROWS = 500
_REPEATS_FOR_SMALL_DATA = 3


@dataclasses.dataclass(frozen=True)
class Splitter:
    """A scikit-learn splitter and how it was chosen."""

    scheme: str
    splitter: Any
    time_ordered: bool = False

    @property
    def n_splits(self) -> int:
        return int(self.splitter.get_n_splits())


@dataclasses.dataclass(frozen=True)
class CVResult:
    """Fold scores of one configuration, with boosters' best iterations."""

    scores: tuple[float, ...]
    best_iterations: tuple[int | None, ...] = ()
    stopped_early: tuple[bool, ...] = ()
    fit_rows: tuple[int, ...] = ()
    curves: tuple[tuple[float, ...], ...] = ()
    curve_metric: str = ""

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores))

    @property
    def std(self) -> float:
        return float(np.std(self.scores))


def choose_splitter(config: TuneConfig, task: str, y: np.ndarray, groups: np.ndarray | None) -> Splitter:
    """Return the splitter of ``config.cv``; ``auto`` picks from the task and columns."""
    scheme = config.cv
    if scheme == "auto":
        if config.time_column:
            scheme = "time_series"
        elif config.group_column:
            scheme = "group"
        elif len(y) < SMALL_DATA_ROWS:
            scheme = "repeated"
        else:
            scheme = "kfold" if task == "regression" else "stratified"
    if config.n_folds < 5:
        warnings.warn(
            f"n_folds={config.n_folds} leaves each score resting on few folds, so the CV mean is noisy "
            "and the search may chase luck; use n_folds=5 or more when the data allows.",
            UserWarning,
            stacklevel=2,
        )
    classification = task != "regression"
    if classification and scheme in ("stratified", "repeated"):
        _check_class_counts(y, config.n_folds)

    if scheme == "time_series":
        return Splitter(scheme, TimeSeriesSplit(n_splits=config.n_folds), time_ordered=True)
    if scheme == "group":
        assert groups is not None
        n_groups = len(np.unique(groups))
        if n_groups < config.n_folds:
            raise ConfigError(
                f"group_column={config.group_column!r} has {n_groups} groups in the training rows, "
                f"fewer than n_folds={config.n_folds}; lower n_folds to at most {n_groups}."
            )
        return Splitter(scheme, GroupKFold(n_splits=config.n_folds, shuffle=True, random_state=config.seed))
    if scheme == "repeated":
        repeated = RepeatedStratifiedKFold if classification else RepeatedKFold
        return Splitter(
            scheme,
            repeated(n_splits=config.n_folds, n_repeats=_REPEATS_FOR_SMALL_DATA, random_state=config.seed),
        )
    if scheme == "stratified":
        if not classification:
            raise ConfigError("cv=stratified needs a classification target; use cv=kfold for regression.")
        return Splitter(scheme, StratifiedKFold(n_splits=config.n_folds, shuffle=True, random_state=config.seed))
    return Splitter(scheme, KFold(n_splits=config.n_folds, shuffle=True, random_state=config.seed))


def _check_class_counts(y: np.ndarray, n_folds: int) -> None:
    counts = np.bincount(y)
    smallest = int(counts[counts > 0].min())
    if smallest < n_folds:
        raise ConfigError(
            f"the smallest class has {smallest} training rows, fewer than n_folds={n_folds}, so some folds "
            f"would miss it; lower n_folds to {max(2, smallest)} or merge rare classes."
        )


def inner_split(
    train_index: np.ndarray, y: np.ndarray, task: str, seed: int, time_ordered: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Split a training fold into a fitting part and an early-stopping part."""
    n_val = max(1, int(math.ceil(len(train_index) * INNER_VALIDATION_FRACTION)))
    if time_ordered:
        return train_index[:-n_val], train_index[-n_val:]
    stratify = y[train_index] if task != "regression" else None
    if stratify is not None and np.bincount(stratify).min(initial=2) < 2:
        stratify = None
    fit_index, val_index = train_test_split(train_index, test_size=n_val, random_state=seed, stratify=stratify)
    return np.sort(fit_index), np.sort(val_index)


def cross_validate(
    adapter: ModelAdapter,
    kwargs: dict[str, Any],
    context: FitContext,
    X: pd.DataFrame,
    y: np.ndarray,
    splitter: Splitter,
    objective: Objective,
    *,
    groups: np.ndarray | None = None,
    on_round: Callable[[int, int, float], None] | None = None,
    on_fold: Callable[[int, float], None] | None = None,
) -> CVResult:
    """Fit and score ``kwargs`` on every fold; raise TrialError if a fold cannot be scored.

    ``on_round(fold, round, value)`` sees each boosting round's validation
    value; ``on_fold(fold, score)`` sees each fold score as it arrives (a
    pruner may raise from either to stop the trial).
    """
    scores: list[float] = []
    best_iterations: list[int | None] = []
    stopped: list[bool] = []
    fit_rows: list[int] = []
    curves: list[tuple[float, ...]] = []
    curve_metric = ""
    for fold, (train_index, test_index) in enumerate(splitter.splitter.split(X, y, groups)):
        fold_round: RoundCallback | None = None
        if on_round is not None:
            def fold_round(round_index: int, value: float, _fold: int = fold) -> None:
                on_round(_fold, round_index, value)
        if adapter.iterative:
            fit_index, val_index = inner_split(train_index, y, context.task, context.seed + fold, splitter.time_ordered)
            result = adapter.fit(
                kwargs, context, X.iloc[fit_index], y[fit_index], X.iloc[val_index], y[val_index], fold_round
            )
        else:
            fit_index = train_index
            result = adapter.fit(kwargs, context, X.iloc[train_index], y[train_index])
        score = score_fold(objective, result.estimator, X.iloc[test_index], y[test_index], fold)
        scores.append(score)
        best_iterations.append(result.best_iteration)
        stopped.append(result.stopped_early)
        fit_rows.append(len(fit_index))
        curves.append(result.curve)
        curve_metric = result.curve_metric
        if on_fold is not None:
            on_fold(fold, score)
    return CVResult(tuple(scores), tuple(best_iterations), tuple(stopped), tuple(fit_rows), tuple(curves), curve_metric)


def score_fold(objective: Objective, estimator: Any, X: pd.DataFrame, y: np.ndarray, fold: int) -> float:
    """Score one fold; a fold that cannot be scored fails the trial with the reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", category=RuntimeWarning)
            score = float(objective.scorer(estimator, X, y))
    except (ValueError, RuntimeWarning) as exc:
        raise TrialError(f"fold {fold} cannot be scored with {objective.name}: {exc}") from exc
    if not math.isfinite(score):
        raise TrialError(f"fold {fold} scored {score} with {objective.name}; a non-finite score fails the trial.")
    return score


def refit_rounds(result: CVResult, n_train_rows: int) -> tuple[int | None, str]:
    """Return the number of rounds for the refit on all training rows, and the rule used.

    Rule: the median of the folds' best iterations, scaled by the ratio of
    all training rows to the mean rows that each fold fitted on (more data
    supports more rounds at the same learning rate). Folds that never stopped
    early contribute their round cap; if none stopped, the cap is used as is.
    """
    iterations = [it for it in result.best_iterations if it is not None]
    if not iterations:
        return None, "model without boosting rounds"
    median = statistics.median(iterations)
    if not any(result.stopped_early):
        return int(median), "no fold stopped early, so the refit uses the round cap"
    scale = n_train_rows / float(np.mean(result.fit_rows))
    rounds = max(1, int(round(median * scale)))
    return rounds, f"median of fold best iterations {list(iterations)} = {median:g}, scaled by {scale:.3f}"
