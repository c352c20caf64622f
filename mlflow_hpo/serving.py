"""The servable model: preprocessing, fitted estimator and class labels in one object."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from mlflow_hpo.preprocessing import TablePreprocessor


class TunedModel(BaseEstimator):
    """A fitted winner that predicts on raw frames, as loaded or built from JSON.

    ``predict`` returns the original class labels for classifiers and
    values for regressors; ``predict_proba`` has one column per entry of
    ``classes_``.
    """

    def __init__(self, preprocessor: TablePreprocessor, estimator: Any, classes: np.ndarray | None = None) -> None:
        self.preprocessor = preprocessor
        self.estimator = estimator
        self.classes = classes

    @property
    def classes_(self) -> np.ndarray | None:
        return self.classes

    def _input(self, X: pd.DataFrame) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            X = pd.DataFrame(X, columns=self.preprocessor.columns_)
        return self.preprocessor.transform(X)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        predictions = np.asarray(self.estimator.predict(self._input(X)))
        if self.classes is None:
            return predictions.astype(float)
        return self.classes[predictions.astype(int)]

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.estimator.predict_proba(self._input(X)))
