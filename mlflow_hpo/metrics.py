"""Objective metrics: scikit-learn scorers, their direction and task fit."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from sklearn.metrics import get_scorer, get_scorer_names

from mlflow_hpo._errors import ConfigError

DEFAULT_METRIC = {
    "binary": "roc_auc",
    "multiclass": "neg_log_loss",
    "regression": "neg_root_mean_squared_error",
}

_CLASSIFICATION_ONLY = (
    "accuracy", "balanced_accuracy", "roc_auc", "average_precision", "neg_log_loss", "neg_brier_score",
    "f1", "precision", "recall", "jaccard", "top_k_accuracy", "matthews_corrcoef", "d2_log_loss_score",
    "d2_brier_score",
)
_REGRESSION_ONLY = (
    "r2", "explained_variance", "max_error", "neg_mean_", "neg_median_absolute_error",
    "neg_root_mean_", "d2_absolute_error_score", "neg_max_error",
)
_BINARY_ONLY = ("roc_auc", "average_precision", "f1", "precision", "recall", "jaccard", "neg_brier_score")


@dataclasses.dataclass(frozen=True)
class Objective:
    """One objective of the study.

    ``name`` is the scorer name; scikit-learn scorers return "greater is
    better" values (losses are negated, as in ``neg_log_loss``), so every
    objective built from a scorer is maximized.
    """

    name: str
    scorer: Any
    direction: str = "maximize"
    needs_proba: bool = False


def resolve_objective(name: str, task: str) -> Objective:
    """Return the Objective for scorer ``name``; raise ConfigError if it does not fit ``task``."""
    if name == "auto":
        name = DEFAULT_METRIC[task]
    if name not in get_scorer_names():
        close = difflib.get_close_matches(name, get_scorer_names(), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see sklearn.metrics.get_scorer_names()."
        raise ConfigError(f"unknown metric {name!r}; use a scikit-learn scorer name, {hint}")
    _check_metric_task(name, task)
    scorer = get_scorer(name)
    response = getattr(scorer, "_response_method", "predict")
    needs_proba = response != "predict"
    return Objective(name=name, scorer=scorer, needs_proba=needs_proba)


def _check_metric_task(name: str, task: str) -> None:
    is_classification_metric = name.startswith(_CLASSIFICATION_ONLY)
    is_regression_metric = name.startswith(_REGRESSION_ONLY)
    if task == "regression" and is_classification_metric:
        raise ConfigError(
            f"metric={name!r} scores classifiers but the task is regression; "
            f"use e.g. metric={DEFAULT_METRIC['regression']}."
        )
    if task != "regression" and is_regression_metric:
        raise ConfigError(
            f"metric={name!r} scores regression but the task is {task}; use e.g. metric={DEFAULT_METRIC[task]}."
        )
    if task == "multiclass" and name in _BINARY_ONLY:
        raise ConfigError(
            f"metric={name!r} needs a binary target but the task is multiclass; "
            f"use a multiclass variant such as {name}_ovr, {name}_macro or {name}_weighted."
            if name in ("roc_auc", "f1", "precision", "recall", "jaccard")
            else f"metric={name!r} needs a binary target but the task is multiclass; use metric=neg_log_loss."
        )
