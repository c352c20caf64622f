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

# MLflow column types of the serving frame, one per kind of training column.
STRING, BOOLEAN, LONG, DOUBLE, DATETIME = "string", "boolean", "long", "double", "datetime"
# Nullable integers (``Int64``) get MLflow's Any type. Records of integers arrive as int64 and
# records with nulls as float64, and MLflow 3.17's schema enforcement rejects one of the two
# for every concrete type (int64 -> double and float64 -> long are both refused).
ANY = "Any"


def is_categorical_column(series: pd.Series) -> bool:
    """Return True for columns that hold labels rather than numbers."""
    dtype = series.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return True
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_datetime64_any_dtype(dtype):
        return False
    return not pd.api.types.is_numeric_dtype(dtype)


def serving_type(series: pd.Series) -> str:
    """Return the MLflow column type that a JSON request uses for a training column.

    Label columns are strings, booleans stay booleans (with None for
    missing), NumPy integer columns are longs and nullable integer columns
    (``Int64``) are ``Any``. Other numbers are doubles.
    """
    dtype = series.dtype
    if is_categorical_column(series):
        return STRING
    if pd.api.types.is_bool_dtype(dtype):
        return BOOLEAN
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return DATETIME
    if pd.api.types.is_integer_dtype(dtype):
        return LONG if isinstance(dtype, np.dtype) else ANY
    return DOUBLE


class TablePreprocessor(TransformerMixin, BaseEstimator):
    """Fix column dtypes and category vocabularies on training data.

    After ``fit``:
        columns_: feature columns in training order.
        categories_: for each label column, its sorted training levels (as str).
        datetime_: datetime columns, given to the model as seconds since the epoch (UTC).
        numeric_: columns converted to float64 (numbers, booleans, datetimes);
            missing values become NaN.
        serving_types_: for each column, the MLflow type of the serving
            frame (``string``, ``boolean``, ``long``, ``double``, ``datetime``
            or ``Any``).
    """

    def fit(self, X: pd.DataFrame, y: Any = None) -> TablePreprocessor:
        self.columns_ = [str(c) for c in X.columns]
        self.categories_: dict[str, list[str]] = {}
        self.datetime_: list[str] = []
        self.serving_types_: dict[str, str] = {}
        for column in X.columns:
            series = X[column]
            kind = serving_type(series)
            self.serving_types_[str(column)] = kind
            if kind == STRING:
                levels = pd.Series(series.dropna().map(_label_text).unique())
                self.categories_[str(column)] = sorted(levels.tolist())
            elif kind == DATETIME:
                self.datetime_.append(str(column))
        self.numeric_ = [c for c in self.columns_ if c not in self.categories_]
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Return the model input: categories with the training levels, everything else float64."""
        frame = self._named_columns(X)
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
        """Return ``X`` in the dtypes that a JSON request produces; this is the signature's input.

        Label columns become object strings with None for missing, booleans
        bool (object with None when some are missing), integers int64
        (float64 when some are missing), nullable integers object ints with
        None, datetimes timezone-naive UTC, and other numbers float64.
        """
        frame = self._named_columns(X)
        out: dict[str, Any] = {}
        for column in self.columns_:
            out[column] = _as_served(frame[column], self.serving_types_[column])
        return pd.DataFrame(out, index=frame.index)

    def _named_columns(self, X: pd.DataFrame) -> pd.DataFrame:
        frame = X.copy()
        frame.columns = [str(c) for c in frame.columns]
        missing = [c for c in self.columns_ if c not in frame.columns]
        if missing:
            raise ValueError(f"input is missing feature columns {missing}; pass every training column.")
        return frame


def _as_served(series: pd.Series, kind: str) -> pd.Series:
    if kind == STRING:
        values = series.astype(object).where(series.notna(), None)
        return values.map(lambda v: None if v is None else _label_text(v)).astype(object)
    if kind == DATETIME:
        return _to_utc(series).dt.tz_localize(None).astype("datetime64[ns]")

    numbers = _to_float(series)
    has_missing = bool(numbers.isna().any())
    if kind == BOOLEAN:
        if not has_missing:
            return numbers.astype(bool)
        return _objects(numbers, bool)
    if kind == LONG and not has_missing:
        return numbers.astype("int64")
    if kind == ANY:
        return _objects(numbers, int)
    return numbers


def _objects(numbers: pd.Series, convert: Any) -> pd.Series:
    # Built as a list because Series.map would turn ints and None back into floats and NaN.
    values = [None if np.isnan(v) else convert(v) for v in numbers.to_numpy()]
    return pd.Series(values, index=numbers.index, dtype=object)


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
    holds_text = series.dtype == object or isinstance(series.dtype, pd.StringDtype)
    if pd.api.types.is_bool_dtype(series.dtype) or holds_text:
        mapped = series.astype(object).map(_bool_or_number)
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


def _to_utc(series: pd.Series) -> pd.Series:
    # Naive values are read as UTC, so a frame and its JSON round trip give the same seconds.
    return pd.to_datetime(series, errors="coerce", utc=True)


def _datetime_to_seconds(series: pd.Series) -> pd.Series:
    moments = _to_utc(series)
    seconds = (moments - pd.Timestamp("1970-01-01", tz="UTC")) / pd.Timedelta(seconds=1)
    return seconds.astype("float64")
