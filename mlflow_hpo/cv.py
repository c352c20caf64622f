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
# Rows that the fitting part of a time-series training window must keep
# after the early-stopping part and the gap are taken off.
MIN_FIT_ROWS = 2


@dataclasses.dataclass(frozen=True)
class Splitter:
    """A scikit-learn splitter and how it was chosen."""

    scheme: str
    splitter: Any
    time_ordered: bool = False
    gap: int = 0
    # Training rows that the splitter divides into folds, or 0 when unknown.
    n_rows: int = 0

    @property
    def n_splits(self) -> int:
        return int(self.splitter.get_n_splits())


# Trial user attribute holding a trial's cross-validation details in one
# dict: duration_s, std, scores, and for boosters best_iterations,
# stopped_early and fit_rows. One attribute is one storage write per trial.
CV_ATTR = "cv"


def cv_attr(trial: Any, key: str, default: Any = None) -> Any:
    """Return ``key`` of the cross-validation details that ``trial`` (an Optuna trial) recorded."""
    return trial.user_attrs.get(CV_ATTR, {}).get(key, default)


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

    def record(self, duration_s: float | None = None) -> dict[str, Any]:
        """Return the value of the ``CV_ATTR`` trial attribute for this result."""
        record: dict[str, Any] = {"std": self.std, "scores": list(self.scores)}
        if duration_s is not None:
            record["duration_s"] = duration_s
        if self.best_iterations:
            record.update(
                best_iterations=list(self.best_iterations),
                stopped_early=list(self.stopped_early),
                fit_rows=list(self.fit_rows),
            )
        return record

    @classmethod
    def of_trial(cls, trial: Any) -> CVResult:
        """Rebuild the result that ``trial`` recorded (its fold scores, or its value alone)."""
        details = trial.user_attrs.get(CV_ATTR, {})
        return cls(
            scores=tuple(details.get("scores", [trial.values[0]])),
            best_iterations=tuple(details.get("best_iterations", [])),
            stopped_early=tuple(details.get("stopped_early", [])),
            fit_rows=tuple(details.get("fit_rows", [])),
        )

    def mean_curve(self) -> list[float]:
        """Return the validation metric per boosting round, averaged over folds.

        Folds stop early at different rounds, so the curve covers only the
        rounds that every fold ran. An average over a changing set of folds
        would jump where a fold stops.
        """
        curves = [curve for curve in self.curves if curve]
        if not curves:
            return []
        rounds = min(len(curve) for curve in curves)
        return [float(v) for v in np.mean([curve[:rounds] for curve in curves], axis=0)]


def choose_splitter(
    config: TuneConfig, task: str, y: np.ndarray, groups: np.ndarray | None, *, iterative: bool = True
) -> Splitter:
    """Return the splitter of ``config.cv``; ``auto`` picks from the task and columns.

    Raises ConfigError before the study when the folds cannot work: a class
    rarer than ``n_folds`` under stratification, fewer groups than folds, or
    time-series folds, validation size and ``gap`` that do not fit the rows.
    ``iterative`` models also need room in each training window for the
    early-stopping part.
    """
    splitter = dataclasses.replace(_build_splitter(config, task, y, groups, iterative), n_rows=len(y))
    check_seeding(splitter)
    return splitter


def _build_splitter(
    config: TuneConfig, task: str, y: np.ndarray, groups: np.ndarray | None, iterative: bool
) -> Splitter:
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
            stacklevel=3,
        )
    classification = task != "regression"
    if classification and scheme in ("stratified", "repeated"):
        _check_class_counts(y, config.n_folds)

    if scheme == "time_series":
        _check_time_series_fit(len(y), config.n_folds, config.gap, iterative)
        return Splitter(scheme, TimeSeriesSplit(n_splits=config.n_folds, gap=config.gap), True, config.gap)
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
        listed = ", ".join(f"class {label}: {int(n)}" for label, n in enumerate(counts) if n > 0)
        raise ConfigError(
            f"the smallest class has {smallest} training rows ({listed}), fewer than n_folds={n_folds}, "
            f"so some folds would miss it; lower n_folds to {max(2, smallest)} or merge rare classes."
        )


def _check_time_series_fit(n_rows: int, n_splits: int, gap: int, iterative: bool) -> None:
    """Check that ``n_splits`` validation blocks, the gap and a training window fit ``n_rows``.

    scikit-learn's TimeSeriesSplit makes each validation block
    ``n_rows // (n_splits + 1)`` rows long, and the first training window
    keeps the rows before the first block minus ``gap``. Boosters also cut
    their early-stopping part and another ``gap`` from that window.
    """
    block = n_rows // (n_splits + 1)
    first_window = n_rows - n_splits * block - gap
    fit_rows = first_window
    detail = ""
    if iterative:
        n_val = _inner_validation_rows(max(first_window, 1))
        fit_rows = first_window - n_val - gap
        detail = f", of which {fit_rows} are left to fit after {n_val} early-stopping rows and gap={gap}"
    if block >= 1 and fit_rows >= MIN_FIT_ROWS:
        return
    raise ConfigError(
        f"time_series split does not fit: {n_rows} training rows with n_folds={n_splits} give validation "
        f"blocks of {block} rows, and the first training window keeps {n_rows} - {n_splits}*{block} - "
        f"gap={gap} = {first_window} rows{detail}; at least {MIN_FIT_ROWS} rows must remain to fit, "
        "so lower n_folds or gap, or supply more rows."
    )


def check_seeding(splitter: Splitter) -> None:
    """Reject a splitter whose shuffling is unseeded, or that shuffles time-ordered rows."""
    inner = splitter.splitter
    shuffles = bool(getattr(inner, "shuffle", False)) or isinstance(
        inner, (RepeatedKFold, RepeatedStratifiedKFold)
    )
    if splitter.time_ordered and shuffles:
        raise ConfigError(
            f"cv={splitter.scheme} shuffles rows that are ordered in time, which lets folds train on "
            "the future; use cv=time_series."
        )
    random_state = getattr(inner, "random_state", None)
    if shuffles and not isinstance(random_state, (int, np.integer)):
        raise ConfigError(
            f"cv={splitter.scheme} shuffles with random_state={random_state!r}, so folds change "
            "between runs; pass an integer seed."
        )
    if not shuffles and random_state is not None:
        raise ConfigError(
            f"cv={splitter.scheme} has random_state={random_state!r} without shuffling, where "
            "the seed has no effect; drop random_state or set shuffle=True."
        )


def _inner_validation_rows(n_train: int) -> int:
    return max(1, int(math.ceil(n_train * INNER_VALIDATION_FRACTION)))


def inner_split(
    train_index: np.ndarray, y: np.ndarray, task: str, seed: int, time_ordered: bool, gap: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split a training fold into a fitting part and an early-stopping part.

    The early-stopping part is a stratified sample of the fold for
    classification, a plain sample for regression, and the latest rows in
    time-series mode, where ``gap`` rows between the two parts are dropped.
    """
    n_val = _inner_validation_rows(len(train_index))
    if time_ordered:
        return train_index[: len(train_index) - n_val - gap], train_index[-n_val:]
    stratify = y[train_index] if task != "regression" else None
    if stratify is not None:
        counts = np.bincount(stratify)
        present = int(np.count_nonzero(counts))
        if counts[counts > 0].min() < 2 or n_val < present or len(train_index) - n_val < present:
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

    ``on_round(fold, round, value)`` receives each boosting round's validation
    value, and ``on_fold(fold, score)`` each fold score as it arrives. A
    pruner may raise from either to stop the trial.
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
            fit_index, val_index = inner_split(
                train_index, y, context.task, context.seed + fold, splitter.time_ordered, splitter.gap
            )
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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("error", category=RuntimeWarning)
        try:
            score = float(objective.scorer(estimator, X, y))
        except (ValueError, RuntimeWarning) as exc:
            raise TrialError(f"fold {fold} cannot be scored with {objective.name}: {exc}{_single_class(y)}") from exc
    if not math.isfinite(score):
        messages = "; ".join(dict.fromkeys(str(w.message) for w in caught))
        raise TrialError(
            f"fold {fold} scored {score} with {objective.name}{_single_class(y)}"
            + (f" ({messages})" if messages else "")
            + "; a non-finite score fails the trial."
        )
    return score


def _single_class(y: np.ndarray) -> str:
    labels = np.unique(y)
    if len(labels) != 1 or not np.issubdtype(y.dtype, np.integer):
        return ""
    return f", because its {len(y)} scoring rows hold a single class ({labels[0]}); use cv=stratified"


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
        _logger.warning(
            "No fold stopped early before the round cap of %d, so the refit uses the cap; "
            "a higher max_boost_rounds may score better.",
            int(median),
        )
        return int(median), "no fold stopped early, so the refit uses the round cap"
    scale = n_train_rows / float(np.mean(result.fit_rows))
    rounds = max(1, int(round(median * scale)))
    return rounds, f"median of fold best iterations {list(iterations)} = {median:g}, scaled by {scale:.3f}"
