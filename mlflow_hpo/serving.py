"""The servable model: preprocessing, fitted estimator and class labels in one object."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.utils import ClassifierTags, RegressorTags, Tags
from sklearn.utils.metaestimators import available_if

from mlflow_hpo.preprocessing import TablePreprocessor


def _estimator_has(method: str) -> Any:
    return lambda model: hasattr(model.estimator, method)


class TunedModel(BaseEstimator):
    """A fitted winner that predicts on raw frames, as loaded or built from JSON.

    ``predict`` returns the original class labels for classifiers and
    values for regressors; ``predict_proba`` has one column per entry of
    ``classes_``. The model tags itself as a classifier when it has class
    labels, so scikit-learn scorers accept it with the original labels as
    ``y_true``.
    """

    def __init__(self, preprocessor: TablePreprocessor, estimator: Any, classes: np.ndarray | None = None) -> None:
        self.preprocessor = preprocessor
        self.estimator = estimator
        self.classes = classes

    @property
    def classes_(self) -> np.ndarray | None:
        return self.classes

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        if self.classes is None:
            tags.estimator_type = "regressor"
            tags.regressor_tags = RegressorTags()
        else:
            tags.estimator_type = "classifier"
            tags.classifier_tags = ClassifierTags(multi_class=len(self.classes) > 2)
        return tags

    def _input(self, X: pd.DataFrame) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            X = pd.DataFrame(X, columns=self.preprocessor.columns_)
        return self.preprocessor.transform(X)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        predictions = np.asarray(self.estimator.predict(self._input(X)))
        if self.classes is None:
            return predictions.astype(float)
        return self.classes[predictions.astype(int)]

    @available_if(_estimator_has("predict_proba"))
    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.estimator.predict_proba(self._input(X)))

    @available_if(_estimator_has("decision_function"))
    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.estimator.decision_function(self._input(X)))
