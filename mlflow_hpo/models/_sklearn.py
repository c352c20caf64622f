"""scikit-learn model families, each wrapped in a pipeline that encodes columns.

Tree ensembles get label columns as ordinal codes with NaN for missing or
unseen levels (they split on NaN natively); linear models and SVMs get
one-hot codes, median-imputed and standardized numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import ElasticNet, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler
from sklearn.svm import SVC, SVR

from mlflow_hpo.models._base import FitContext, FitResult, ModelAdapter, RoundCallback

_label_columns = make_column_selector(dtype_include="category")
_number_columns = make_column_selector(dtype_exclude="category")


def _ordinal_encoder() -> ColumnTransformer:
    ordinal = OrdinalEncoder(
        handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan
    )
    return ColumnTransformer(
        [("labels", ordinal, _label_columns), ("numbers", "passthrough", _number_columns)],
        verbose_feature_names_out=False,
    )


def _scaled_encoder() -> ColumnTransformer:
    one_hot = make_pipeline(
        SimpleImputer(strategy="constant", fill_value="__missing__"),
        OneHotEncoder(handle_unknown="ignore", sparse_output=False),
    )
    numbers = make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler())
    return ColumnTransformer(
        [("labels", one_hot, _label_columns), ("numbers", numbers, _number_columns)],
        verbose_feature_names_out=False,
    )


class SklearnAdapter(ModelAdapter):
    """A scikit-learn estimator behind an encoding pipeline."""

    def __init__(
        self,
        name: str,
        classifier: type | None,
        regressor: type | None,
        *,
        scaled: bool,
        threaded: bool = False,
    ) -> None:
        self.name = name
        self._classes = {"classifier": classifier, "regressor": regressor}
        self._scaled = scaled
        self._threaded = threaded
        self.tasks = tuple(
            task
            for task in ("binary", "multiclass", "regression")
            if (regressor if task == "regression" else classifier) is not None
        )

    def build(self, kwargs: dict[str, Any], context: FitContext) -> Pipeline:
        """Return an unfitted pipeline of encoder and estimator."""
        estimator_class = self._classes["regressor" if context.task == "regression" else "classifier"]
        assert estimator_class is not None
        options = dict(kwargs)
        if "random_state" in estimator_class().get_params():
            options.setdefault("random_state", context.seed)
        if self._threaded:
            options.setdefault("n_jobs", context.n_threads)
        if estimator_class is SVC:
            options.setdefault("probability", True)
        encoder = _scaled_encoder() if self._scaled else _ordinal_encoder()
        return Pipeline([("encode", encoder), ("model", estimator_class(**options))])

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
        return FitResult(self.build(kwargs, context).fit(X_fit, y_fit))

    def fit_final(
        self, kwargs: dict[str, Any], context: FitContext, X: pd.DataFrame, y: np.ndarray, n_rounds: int | None
    ) -> Any:
        return self.build(kwargs, context).fit(X, y)


class HistGradientBoostingAdapter(SklearnAdapter):
    """HistGradientBoosting with native categories; its own early stopping uses a
    validation fraction of the training fold, never the fold's scoring rows."""

    def build(self, kwargs: dict[str, Any], context: FitContext) -> Pipeline:
        estimator_class = HistGradientBoostingRegressor if context.task == "regression" else HistGradientBoostingClassifier
        options = {
            "random_state": context.seed,
            "categorical_features": "from_dtype",
            "early_stopping": True,
            "n_iter_no_change": min(context.early_stopping_rounds, 50),
            "max_iter": min(context.max_boost_rounds, 1000),
            **kwargs,
        }
        return Pipeline([("model", estimator_class(**options))])


SKLEARN_ADAPTERS: dict[str, SklearnAdapter] = {
    "random_forest": SklearnAdapter(
        "random_forest", RandomForestClassifier, RandomForestRegressor, scaled=False, threaded=True
    ),
    "extra_trees": SklearnAdapter("extra_trees", ExtraTreesClassifier, ExtraTreesRegressor, scaled=False, threaded=True),
    "hist_gradient_boosting": HistGradientBoostingAdapter(
        "hist_gradient_boosting", HistGradientBoostingClassifier, HistGradientBoostingRegressor, scaled=False
    ),
    "logistic_regression": SklearnAdapter("logistic_regression", LogisticRegression, None, scaled=True),
    "ridge": SklearnAdapter("ridge", None, Ridge, scaled=True),
    "elastic_net": SklearnAdapter("elastic_net", None, ElasticNet, scaled=True),
    "svm": SklearnAdapter("svm", SVC, SVR, scaled=True),
}
