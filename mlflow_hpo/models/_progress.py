"""The objective's own metric on a booster's validation set, round by round.

A booster evaluates its early-stopping metric on the validation set after
every round. Where that metric is the study's scorer up to a sign or a
closed-form change (AUC, log loss, error rate, squared or absolute error),
the scorer value is derived from it at no cost. Other scorers are computed
from the booster's validation predictions, which costs one prediction pass
per report, so they are computed only every ``REPORT_EVERY_ROUNDS`` rounds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.metrics import get_scorer

from mlflow_hpo.models._base import REPORT_EVERY_ROUNDS

# (scorer, booster metric) -> scorer value from the booster's value and the
# validation targets. Keys cover LightGBM and XGBoost metric names.
_EXACT: dict[tuple[str, str], Callable[[float, np.ndarray], float]] = {
    ("roc_auc", "auc"): lambda v, y: v,
    ("average_precision", "average_precision"): lambda v, y: v,
    ("neg_log_loss", "binary_logloss"): lambda v, y: -v,
    ("neg_log_loss", "logloss"): lambda v, y: -v,
    ("neg_log_loss", "multi_logloss"): lambda v, y: -v,
    ("neg_log_loss", "mlogloss"): lambda v, y: -v,
    ("accuracy", "binary_error"): lambda v, y: 1.0 - v,
    ("accuracy", "error"): lambda v, y: 1.0 - v,
    ("accuracy", "multi_error"): lambda v, y: 1.0 - v,
    ("accuracy", "merror"): lambda v, y: 1.0 - v,
    ("neg_root_mean_squared_error", "rmse"): lambda v, y: -v,
    ("neg_mean_squared_error", "l2"): lambda v, y: -v,
    ("neg_mean_squared_error", "rmse"): lambda v, y: -(v**2),
    ("neg_mean_absolute_error", "l1"): lambda v, y: -v,
    ("neg_mean_absolute_error", "mae"): lambda v, y: -v,
    ("r2", "l2"): lambda v, y: 1.0 - v / float(np.var(y)),
    ("r2", "rmse"): lambda v, y: 1.0 - v**2 / float(np.var(y)),
}


def exact_conversion(scorer: str, booster_metric: str) -> Callable[[float, np.ndarray], float] | None:
    """Return the map from a booster metric value to the scorer value, or None if there is none."""
    return _EXACT.get((scorer, booster_metric))


class _FixedClassifier(ClassifierMixin, BaseEstimator):
    """A classifier whose predictions were computed elsewhere, for a scikit-learn scorer."""

    def __init__(self, proba: np.ndarray, n_classes: int) -> None:
        self.proba = proba
        self.n_classes = n_classes
        self.classes_ = np.arange(n_classes)

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.proba

    def predict(self, X: Any) -> np.ndarray:
        return np.argmax(self.proba, axis=1)

    def decision_function(self, X: Any) -> np.ndarray:
        return self.proba[:, 1] if self.n_classes == 2 else self.proba


class _FixedRegressor(RegressorMixin, BaseEstimator):
    """A regressor whose predictions were computed elsewhere, for a scikit-learn scorer."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def predict(self, X: Any) -> np.ndarray:
        return self.values


def score_predictions(scorer: str, task: str, n_classes: int, raw: np.ndarray, X: Any, y: np.ndarray) -> float:
    """Score booster predictions ``raw`` with the scikit-learn scorer ``scorer``.

    ``raw`` is the positive-class probability for binary tasks, one
    probability column per class for multiclass, and the prediction itself
    for regression.
    """
    if task == "regression":
        return float(get_scorer(scorer)(_FixedRegressor(np.asarray(raw)), X, y))
    proba = np.asarray(raw, dtype=float)
    if task == "binary":
        proba = np.column_stack([1.0 - proba, proba])
    return float(get_scorer(scorer)(_FixedClassifier(proba, max(n_classes, 2)), X, y))


def wants_report(round_index: int) -> bool:
    """Return True on the rounds whose value is computed from predictions."""
    return round_index % REPORT_EVERY_ROUNDS == 0
