"""Column typing that travels with the model, from training to serving.

`TablePreprocessor` is fitted on the training rows only. It fixes the
vocabulary of every text, category or boolean-like column, maps levels that
were not seen in training to missing, and restores numeric dtypes, so a frame
built from JSON records (strings with object dtype, nullable integers) gives
the same model input as the training frame.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin


def is_categorical_column(series: pd.Series) -> bool:
    """Return True for columns that hold labels rather than numbers."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return True
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_datetime64_any_dtype(dtype):
        return False
    return not pd.api.types.is_numeric_dtype(dtype)


class TablePreprocessor(TransformerMixin, BaseEstimator):
    """Fix column dtypes and category vocabularies on training data.

    After ``fit``:
        columns_: feature columns in training order.
        categories_: for each label column, its sorted training levels (as str).
        numeric_: columns converted to float64 (numbers, booleans, datetimes
            as seconds since the epoch); missing values become NaN.
    """

    def fit(self, X: pd.DataFrame, y: Any = None) -> TablePreprocessor:
        self.columns_ = [str(c) for c in X.columns]
        self.categories_: dict[str, list[str]] = {}
        self.datetime_: list[str] = []
        for column in X.columns:
            series = X[column]
            if is_categorical_column(series):
                levels = pd.Series(series.dropna().astype(str).unique())
                self.categories_[str(column)] = sorted(levels.tolist())
            elif pd.api.types.is_datetime64_any_dtype(series.dtype):
                self.datetime_.append(str(column))
        self.numeric_ = [c for c in self.columns_ if c not in self.categories_]
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        frame = X.copy()
        frame.columns = [str(c) for c in frame.columns]
        missing = [c for c in self.columns_ if c not in frame.columns]
        if missing:
            raise ValueError(f"input is missing feature columns {missing}; pass every training column.")
        out: dict[str, Any] = {}
        for column in self.columns_:
            series = frame[column]
            if column in self.categories_:
                out[column] = _to_category(series, self.categories_[column])
            elif column in self.datetime_:
                out[column] = _datetime_to_seconds(series)
            else:
                out[column] = _to_float(series)
        return pd.DataFrame(out, index=frame.index)

    def serving_frame(self, X: pd.DataFrame) -> pd.DataFrame:
        """Return ``X`` in the plain dtypes that a JSON request produces.

        Label columns become object strings with None for missing, other
        columns float64; this is the model's signature input.
        """
        frame = X.copy()
        frame.columns = [str(c) for c in frame.columns]
        out: dict[str, Any] = {}
        for column in self.columns_:
            series = frame[column]
            if column in self.categories_:
                values = series.astype(object).where(series.notna(), None)
                out[column] = values.map(lambda v: None if v is None else str(v)).astype(object)
            elif column in self.datetime_:
                out[column] = _datetime_to_seconds(series)
            else:
                out[column] = _to_float(series)
        return pd.DataFrame(out, index=frame.index)


def _to_category(series: pd.Series, levels: list[str]) -> pd.Series:
    as_text = series.astype(object).where(series.notna(), None)
    as_text = as_text.map(lambda v: None if v is None else _label_text(v))
    return pd.Series(pd.Categorical(as_text, categories=levels), index=series.index)


def _label_text(value: Any) -> str:
    # 1.0 read back from JSON and 1 from training must name the same level.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _to_float(series: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(series.dtype) or series.dtype == object:
        mapped = series.map(_bool_or_number)
        return pd.to_numeric(mapped, errors="coerce").astype("float64")
    return pd.to_numeric(series, errors="coerce").astype("float64")


def _bool_or_number(value: Any) -> Any:
    if value is None or value is pd.NA:
        return np.nan
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "false"):
            return float(lowered == "true")
    return value


def _datetime_to_seconds(series: pd.Series) -> pd.Series:
    moments = pd.to_datetime(series, errors="coerce")
    seconds = (moments - pd.Timestamp("1970-01-01", tz=moments.dt.tz)) / pd.Timedelta(seconds=1)
    return seconds.astype("float64")
