"""Nested cross-validation: the whole search again inside each outer fold.

The best CV score of a study is the maximum over many trials scored on the
same folds, so it is biased upward. Nested CV splits the training rows into
outer folds; for each one it runs a fresh search (same space, strategy,
pruner and trial budget) on the outer-training rows only, refits the
winner there, and scores it once on the outer-test rows. The mean and std
of those outer scores estimate how the whole tuning procedure performs on
new data. The held-out test rows stay untouched.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna

from mlflow_hpo._errors import ConfigError, HpoError, TrialError
from mlflow_hpo.config import TuneConfig
from mlflow_hpo.cv import CV_ATTR, CVResult, Splitter, choose_splitter, refit_rounds, score_fold
from mlflow_hpo.pruning import make_pruner
from mlflow_hpo.strategy import choose_strategy, trial_budget

if TYPE_CHECKING:
    from mlflow_hpo.data import Dataset
    from mlflow_hpo.study import Job

_logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class OuterFold:
    """One outer fold: the inner search's winner and its score on the outer-test rows."""

    fold: int
    outer_score: float
    inner_best: float
    params: dict[str, Any]
    refit_n_estimators: int | None
    n_train_rows: int
    n_test_rows: int


@dataclasses.dataclass(frozen=True)
class NestedResult:
    """Outer-fold scores of nested cross-validation."""

    scheme: str
    folds: tuple[OuterFold, ...]

    @property
    def outer_mean(self) -> float:
        return float(np.mean([f.outer_score for f in self.folds]))

    @property
    def outer_std(self) -> float:
        return float(np.std([f.outer_score for f in self.folds]))

    @property
    def inner_best_mean(self) -> float:
        return float(np.mean([f.inner_best for f in self.folds]))

    def metrics(self, name: str) -> dict[str, float]:
        """Return the parent-run metrics, under names that mark them as nested CV."""
        values = {
            f"nested_outer_{name}_mean": self.outer_mean,
            f"nested_outer_{name}_std": self.outer_std,
            f"nested_inner_best_{name}_mean": self.inner_best_mean,
        }
        for fold in self.folds:
            values[f"nested_outer_{name}_fold{fold.fold}"] = fold.outer_score
        return values

    def as_dict(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "outer_mean": self.outer_mean,
            "outer_std": self.outer_std,
            "inner_best_mean": self.inner_best_mean,
            "folds": [dataclasses.asdict(fold) for fold in self.folds],
        }


def outer_splitter(job: Job) -> Splitter:
    """Return the outer splitter: the study's scheme, without repeats."""
    return _outer_splitter(job.config, job.splitter.scheme, job.dataset, job.adapter.iterative)


def _outer_splitter(config: TuneConfig, scheme: str, dataset: Dataset, iterative: bool) -> Splitter:
    if scheme == "repeated":
        config = config.replace(cv="kfold" if dataset.task == "regression" else "stratified")
    return _splitter(config, dataset.task, dataset.y_train, dataset.groups_train, iterative)


def check_nested_folds(config: TuneConfig, scheme: str, dataset: Dataset, iterative: bool) -> None:
    """Raise ConfigError before the study if an outer fold leaves too few rows for the inner folds."""
    outer = _outer_splitter(config, scheme, dataset, iterative)
    y, groups = dataset.y_train, dataset.groups_train
    for fold, (train_index, _) in enumerate(outer.splitter.split(dataset.X_train, y, groups)):
        inner_groups = None if groups is None else groups[train_index]
        try:
            _splitter(config, dataset.task, y[train_index], inner_groups, iterative)
        except ConfigError as exc:
            raise ConfigError(
                f"nested_cv=true: outer fold {fold} keeps {len(train_index)} training rows, too few for "
                f"the inner folds ({exc}); lower n_folds or set nested_cv=false."
            ) from exc


def nested_cross_validate(job: Job) -> NestedResult:
    """Run the search inside each outer fold of the training rows; raise HpoError if a fold has no winner."""
    outer = outer_splitter(job)
    X, y, groups = job.dataset.X_train, job.dataset.y_train, job.dataset.groups_train
    folds = []
    for fold, (train_index, test_index) in enumerate(outer.splitter.split(X, y, groups)):
        inner_job = _inner_job(job, train_index)
        best, n_rounds = _search(inner_job, fold)
        kwargs = job.space.model_kwargs(best.params)
        estimator = job.adapter.fit_final(kwargs, job.context, X.iloc[train_index], y[train_index], n_rounds)
        try:
            outer_score = score_fold(job.objective, estimator, X.iloc[test_index], y[test_index], fold)
        except TrialError as exc:
            raise HpoError(f"nested CV outer fold {fold} cannot be scored: {exc}") from exc
        _logger.info(
            "Nested CV outer fold %d of %d: inner best %s %.6g, outer score %.6g.",
            fold + 1, outer.n_splits, job.objective.name, best.value, outer_score,
        )
        folds.append(
            OuterFold(fold, outer_score, float(best.value or 0.0), dict(best.params), n_rounds, len(train_index), len(test_index))
        )
    return NestedResult(outer.scheme, tuple(folds))


def _inner_job(job: Job, train_index: np.ndarray) -> Job:
    dataset = dataclasses.replace(
        job.dataset,
        X_train=job.dataset.X_train.iloc[train_index].reset_index(drop=True),
        y_train=job.dataset.y_train[train_index],
        groups_train=None if job.dataset.groups_train is None else job.dataset.groups_train[train_index],
    )
    splitter = _splitter(job.config, dataset.task, dataset.y_train, dataset.groups_train, job.adapter.iterative)
    # A fresh sampler per outer fold: samplers keep state between trials.
    strategy = choose_strategy(job.config, job.space, n_rows=len(dataset.X_train), n_splits=splitter.n_splits)
    return dataclasses.replace(job, dataset=dataset, splitter=splitter, strategy=strategy)


def _splitter(
    config: TuneConfig, task: str, y: np.ndarray, groups: np.ndarray | None, iterative: bool
) -> Splitter:
    with warnings.catch_warnings():
        # The study's own splitter already warned about a small n_folds.
        warnings.simplefilter("ignore", UserWarning)
        return choose_splitter(config, task, y, groups, iterative=iterative)


def _search(job: Job, fold: int) -> tuple[optuna.trial.FrozenTrial, int | None]:
    """Run the search of ``job`` in memory; return its best trial and the refit rounds."""
    from mlflow_hpo.study import evaluate

    study = optuna.create_study(
        direction="maximize",
        sampler=job.strategy.sampler,
        pruner=make_pruner(job.config, job.adapter, job.strategy, job.splitter),
    )

    def objective(trial: optuna.Trial) -> float:
        kwargs = job.space.model_kwargs(job.space.suggest(trial))
        result = evaluate(job, trial, kwargs)
        trial.set_user_attr(CV_ATTR, result.record())
        return result.mean

    n_trials = trial_budget(job.config.n_trials, job.strategy)
    study.optimize(objective, n_trials=n_trials, timeout=job.config.timeout, catch=(TrialError,))
    try:
        best = study.best_trial
    except ValueError:
        raise HpoError(
            f"nested CV outer fold {fold}: no inner trial completed; see the log for the failed trials' reasons."
        ) from None
    n_rounds, _ = refit_rounds(CVResult.of_trial(best), len(job.dataset.X_train))
    return best, n_rounds
