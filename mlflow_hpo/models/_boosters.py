"""LightGBM and XGBoost adapters with early stopping on an inner validation set.

Both use each library's supported early-stopping API for the installed major
version: LightGBM 4 takes the ``lightgbm.early_stopping`` callback, and
XGBoost 2.1+ takes ``early_stopping_rounds`` and ``eval_metric`` in the
estimator's constructor, not in ``fit()``. The validation metric follows the
study's objective wherever the library has an equivalent. Only the inner
validation set is passed as an evaluation set, so neither early stopping nor
the round reports ever see training rows.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import lightgbm as lgb
import numpy as np
import pandas as pd
import xgboost as xgb

from mlflow_hpo._errors import TrialError
from mlflow_hpo.models._base import FitContext, FitResult, ModelAdapter, RoundCallback
from mlflow_hpo.models._progress import exact_conversion, score_predictions, wants_report

_logger = logging.getLogger(__name__)

# scikit-learn scorer -> (LightGBM metric, XGBoost metric), per task kind.
_BINARY_METRICS = {
    "roc_auc": ("auc", "auc"),
    "neg_log_loss": ("binary_logloss", "logloss"),
    "accuracy": ("binary_error", "error"),
    "average_precision": ("average_precision", "aucpr"),
}
_MULTICLASS_METRICS = {
    "neg_log_loss": ("multi_logloss", "mlogloss"),
    "accuracy": ("multi_error", "merror"),
}
_REGRESSION_METRICS = {
    "neg_root_mean_squared_error": ("rmse", "rmse"),
    "neg_mean_squared_error": ("l2", "rmse"),
    "neg_mean_absolute_error": ("l1", "mae"),
    "r2": ("l2", "rmse"),
}
_DEFAULT_METRICS = {
    "binary": ("binary_logloss", "logloss"),
    "multiclass": ("multi_logloss", "mlogloss"),
    "regression": ("l2", "rmse"),
}


def booster_metric(task: str, scorer: str, library: int) -> str:
    """Return the early-stopping metric of library 0 (LightGBM) or 1 (XGBoost) for a scorer."""
    table = {"binary": _BINARY_METRICS, "multiclass": _MULTICLASS_METRICS, "regression": _REGRESSION_METRICS}[task]
    pair = table.get(scorer)
    if pair is None:
        # NOTE: scorers without a built-in booster equivalent fall back to the
        # task's log loss or squared error for early stopping only.
        pair = _DEFAULT_METRICS[task]
    return pair[library]


class _ValidationProgress:
    """Turns one round's validation results into the study scorer's value."""

    def __init__(
        self, library: str, metric: str, context: FitContext, X_val: pd.DataFrame, y_val: np.ndarray
    ) -> None:
        self.library = library
        self.metric = metric
        self.context = context
        self.X_val = X_val
        self.y_val = y_val
        self.convert = exact_conversion(context.metric, metric)

    def value(self, round_index: int, evaluated: dict[str, float], predict: Any) -> float | None:
        """Return the scorer's value after ``round_index``, or None on rounds left out."""
        if self.metric not in evaluated:
            raise TrialError(
                f"{self.library} evaluated {sorted(evaluated) or 'no metric'} on the validation set at "
                f"round {round_index}, not the early-stopping metric {self.metric!r}; remove the metric "
                "override from the search space or use a metric name the library knows."
            )
        if self.convert is not None:
            return self.convert(evaluated[self.metric], self.y_val)
        if not wants_report(round_index):
            return None
        try:
            return score_predictions(
                self.context.metric, self.context.task, self.context.n_classes, predict(), self.X_val, self.y_val
            )
        except ValueError as exc:
            # Rare classes can be missing from the small early-stopping part; the
            # round is then left out of the reports and the fold score still counts.
            _logger.debug("Round %d not reported: %s", round_index, exc)
            return None


def _fit_rounds(best: int | None, cap: int) -> tuple[int, bool]:
    if best is None or best <= 0:
        return cap, False
    return best, best < cap


class LightGBMAdapter(ModelAdapter):
    name = "lightgbm"
    iterative = True

    def _estimator(self, kwargs: dict[str, Any], context: FitContext, n_rounds: int) -> Any:
        common = {
            "n_estimators": n_rounds,
            "random_state": context.seed,
            "n_jobs": context.n_threads,
            "verbose": -1,
            **kwargs,
        }
        if context.task == "regression":
            return lgb.LGBMRegressor(**common)
        return lgb.LGBMClassifier(**common)

    def fit(
        self,
        kwargs: dict[str, Any],
        context: FitContext,
        X_fit: pd.DataFrame,
        y_fit: np.ndarray,
        X_val: pd.DataFrame | None = None,
        y_val: np.ndarray | None = None,
        on_round: RoundCallback | None = None,
    ) -> FitResult:
        metric = booster_metric(context.task, context.metric, 0)
        estimator = self._estimator({"metric": metric, **kwargs}, context, context.max_boost_rounds)
        history: dict[str, Any] = {}
        callbacks = [
            lgb.early_stopping(context.early_stopping_rounds, first_metric_only=True, verbose=False),
            lgb.record_evaluation(history),
        ]
        if on_round is not None:
            assert X_val is not None
            assert y_val is not None
            progress = _ValidationProgress("LightGBM", metric, context, X_val, y_val)
            callbacks.append(_lightgbm_reporter(on_round, progress))
        try:
            estimator.fit(
                X_fit, y_fit, eval_X=(X_val,), eval_y=(y_val,), eval_names=["validation"], callbacks=callbacks
            )
        except ValueError as exc:
            if "eval metric" not in str(exc):
                raise
            raise TrialError(
                f"LightGBM evaluated no metric on the validation set at the first round (metric "
                f"{estimator.get_params().get('metric')!r} is unknown to it), so early stopping cannot "
                f"run; use a LightGBM metric name such as {metric!r}."
            ) from exc
        curve = tuple(float(v) for v in history.get("validation", {}).get(metric, []))
        best, stopped = _fit_rounds(estimator.best_iteration_, context.max_boost_rounds)
        return FitResult(estimator, best_iteration=best, stopped_early=stopped, curve=curve, curve_metric=metric)

    def fit_final(
        self, kwargs: dict[str, Any], context: FitContext, X: pd.DataFrame, y: np.ndarray, n_rounds: int | None
    ) -> Any:
        estimator = self._estimator(kwargs, context, n_rounds or context.max_boost_rounds)
        return estimator.fit(X, y)


def _lightgbm_reporter(on_round: RoundCallback, progress: _ValidationProgress) -> Any:
    def _callback(env: lgb.callback.CallbackEnv) -> None:
        evaluated = {
            entry[1]: float(entry[2]) for entry in env.evaluation_result_list or [] if entry[0] == "validation"
        }
        value = progress.value(
            env.iteration,
            evaluated,
            lambda: cast(lgb.Booster, env.model).predict(progress.X_val, num_iteration=env.iteration + 1),
        )
        if value is not None:
            on_round(env.iteration, value)

    _callback.order = 40  # type: ignore[attr-defined]
    return _callback


class _XGBoostReporter(xgb.callback.TrainingCallback):
    def __init__(self, on_round: RoundCallback, progress: _ValidationProgress) -> None:
        super().__init__()
        self._on_round = on_round
        self._progress = progress

    def after_iteration(self, model: Any, epoch: int, evals_log: dict[str, Any]) -> bool:
        # The only evaluation set is the inner validation set, named validation_0.
        scores = evals_log.get("validation_0", {})
        evaluated = {name: float(values[-1]) for name, values in scores.items() if values}
        value = self._progress.value(
            epoch,
            evaluated,
            lambda: model.inplace_predict(self._progress.X_val, iteration_range=(0, epoch + 1)),
        )
        if value is not None:
            self._on_round(epoch, value)
        return False


# DART recomputes dropped trees every round, so a round costs time that grows
# with the rounds already built; its cap is lower than gbtree's.
DART_MAX_ROUNDS = 300


def _round_cap(kwargs: dict[str, Any], context: FitContext) -> int:
    if kwargs.get("booster") == "dart":
        return min(context.max_boost_rounds, DART_MAX_ROUNDS)
    return context.max_boost_rounds


class XGBoostAdapter(ModelAdapter):
    name = "xgboost"
    iterative = True

    def _estimator(self, kwargs: dict[str, Any], context: FitContext, n_rounds: int, **extra: Any) -> Any:
        common = {
            "n_estimators": n_rounds,
            "random_state": context.seed,
            "n_jobs": context.n_threads,
            "enable_categorical": True,
            **extra,
            **kwargs,
        }
        if context.task == "regression":
            return xgb.XGBRegressor(**common)
        return xgb.XGBClassifier(**common)

    def fit(
        self,
        kwargs: dict[str, Any],
        context: FitContext,
        X_fit: pd.DataFrame,
        y_fit: np.ndarray,
        X_val: pd.DataFrame | None = None,
        y_val: np.ndarray | None = None,
        on_round: RoundCallback | None = None,
    ) -> FitResult:
        metric = booster_metric(context.task, context.metric, 1)
        callbacks = None
        if on_round is not None:
            assert X_val is not None
            assert y_val is not None
            progress = _ValidationProgress("XGBoost", metric, context, X_val, y_val)
            callbacks = [_XGBoostReporter(on_round, progress)]
        cap = _round_cap(kwargs, context)
        estimator = self._estimator(
            kwargs,
            context,
            cap,
            early_stopping_rounds=context.early_stopping_rounds,
            eval_metric=metric,
            callbacks=callbacks,
        )
        try:
            estimator.fit(X_fit, y_fit, eval_set=[(X_val, y_val)], verbose=False)
        except xgb.core.XGBoostError as exc:
            if "metric" in str(exc).lower():
                first_line = str(exc).splitlines()[0]
                raise TrialError(
                    f"XGBoost rejected the early-stopping metric at the first round ({first_line}); "
                    f"use an XGBoost metric name such as {metric!r}."
                ) from exc
            raise
        results: dict[str, dict[str, list[float]]] = estimator.evals_result()
        first_set: dict[str, list[float]] = next(iter(results.values()), {})
        curve = tuple(float(v) for v in first_set.get(metric, []))
        best_index = getattr(estimator, "best_iteration", None)
        best, stopped = _fit_rounds(None if best_index is None else best_index + 1, cap)
        return FitResult(estimator, best_iteration=best, stopped_early=stopped, curve=curve, curve_metric=metric)

    def fit_final(
        self, kwargs: dict[str, Any], context: FitContext, X: pd.DataFrame, y: np.ndarray, n_rounds: int | None
    ) -> Any:
        estimator = self._estimator(kwargs, context, n_rounds or _round_cap(kwargs, context))
        return estimator.fit(X, y, verbose=False)
