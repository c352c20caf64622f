"""Loading tables, detecting the task and splitting off the held-out test set."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import datasets
from sklearn.model_selection import GroupShuffleSplit, train_test_split

from mlflow_hpo._errors import ConfigError
from mlflow_hpo.config import TuneConfig
from mlflow_hpo.preprocessing import TablePreprocessor

_logger = logging.getLogger(__name__)

SKLEARN_DATASETS = {
    "breast_cancer": datasets.load_breast_cancer,
    "diabetes": datasets.load_diabetes,
    "digits": datasets.load_digits,
    "iris": datasets.load_iris,
    "wine": datasets.load_wine,
}
# A numeric target with at most this many distinct integer values is a class label.
_MAX_CLASSES_FOR_INTEGER_TARGET = 20


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Training rows for the search and the held-out rows for the final test.

    ``X_train`` and ``X_test`` are already transformed by ``preprocessor``
    (fixed category vocabularies, numeric dtypes); ``raw_test`` keeps the
    held-out rows as loaded, for serving checks. Class labels are encoded as
    0..k-1 and ``classes`` maps them back.
    """

    name: str
    task: str
    X_train: pd.DataFrame
    y_train: np.ndarray
    X_test: pd.DataFrame
    y_test: np.ndarray
    raw_train: pd.DataFrame
    raw_test: pd.DataFrame
    preprocessor: TablePreprocessor
    classes: np.ndarray | None
    groups_train: np.ndarray | None
    digest: str

    @property
    def n_classes(self) -> int:
        return 0 if self.classes is None else len(self.classes)


def load_table(spec: str) -> tuple[pd.DataFrame, str, str]:
    """Load ``spec`` and return the table, its default target column and a short name."""
    if spec.startswith("sklearn:"):
        name = spec.split(":", 1)[1]
        loader = SKLEARN_DATASETS.get(name)
        if loader is None:
            raise ConfigError(
                f"unknown scikit-learn dataset {name!r} in data={spec!r}; "
                f"choose one of: {', '.join('sklearn:' + n for n in SKLEARN_DATASETS)}."
            )
        bunch = loader(as_frame=True)
        frame = bunch.frame.copy()
        return frame, "target", name

    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"data file not found: data={spec!r}; pass an existing CSV or Parquet path.")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        elif suffix in (".csv", ".txt", ".gz"):
            frame = pd.read_csv(path)
        else:
            raise ConfigError(
                f"unsupported data file type {suffix!r} in data={spec!r}; use a .csv or .parquet file."
            )
    except (pd.errors.EmptyDataError, pd.errors.ParserError, OSError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"cannot read data={spec!r} ({first_line}); check that the file is a valid table.") from exc
    default_target = str(frame.columns[-1]) if len(frame.columns) else ""
    return frame, default_target, path.stem


def detect_task(y: pd.Series) -> str:
    """Return ``binary``, ``multiclass`` or ``regression`` for a target column."""
    n_unique = y.nunique(dropna=True)
    if n_unique <= 2:
        return "binary"
    if pd.api.types.is_bool_dtype(y) or not pd.api.types.is_numeric_dtype(y):
        return "multiclass"
    values = y.dropna().to_numpy(dtype=float)
    if np.all(np.equal(np.mod(values, 1), 0)) and n_unique <= _MAX_CLASSES_FOR_INTEGER_TARGET:
        return "multiclass"
    return "regression"


def prepare(config: TuneConfig) -> Dataset:
    """Load, check and split the data of ``config``; raise ConfigError on bad input."""
    frame, default_target, name = load_table(config.data)
    if frame.empty or len(frame.columns) == 0:
        raise ConfigError(f"data={config.data!r} has no rows; pass a table with at least one row per fold.")
    target = config.target or default_target
    _check_columns(frame, config, target)

    missing_target = frame[target].isna()
    if missing_target.all():
        raise ConfigError(f"target column {target!r} has no values; choose another target column.")
    if missing_target.any():
        _logger.warning("Dropping %d rows whose target %r is missing.", int(missing_target.sum()), target)
        frame = frame.loc[~missing_target].reset_index(drop=True)

    y_raw = frame[target]
    task = detect_task(y_raw) if config.task == "auto" else config.task
    _check_task(y_raw, task, target)

    features = frame.drop(columns=[target])
    groups = features[config.group_column].to_numpy() if config.group_column else None
    if config.group_column:
        features = features.drop(columns=[config.group_column])

    y, classes = _encode_target(y_raw, task)
    train_idx, test_idx = _split_holdout(features, y, task, config, groups)
    raw_train = features.iloc[train_idx].reset_index(drop=True)
    raw_test = features.iloc[test_idx].reset_index(drop=True)
    if config.time_column:
        raw_train = raw_train.drop(columns=[config.time_column])
        raw_test = raw_test.drop(columns=[config.time_column])
    if raw_train.shape[1] == 0:
        raise ConfigError(f"data={config.data!r} has no feature columns besides the target; add features.")

    preprocessor = TablePreprocessor().fit(raw_train)
    return Dataset(
        name=name,
        task=task,
        X_train=preprocessor.transform(raw_train),
        y_train=y[train_idx],
        X_test=preprocessor.transform(raw_test),
        y_test=y[test_idx],
        raw_train=raw_train,
        raw_test=raw_test,
        preprocessor=preprocessor,
        classes=classes,
        groups_train=None if groups is None else groups[train_idx],
        digest=frame_digest(frame),
    )


def frame_digest(frame: pd.DataFrame) -> str:
    """Return a short, stable content hash of a table (values and column names)."""
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest = hashlib.sha256(hashed.tobytes())
    digest.update(",".join(map(str, frame.columns)).encode())
    return digest.hexdigest()[:16]


def _check_columns(frame: pd.DataFrame, config: TuneConfig, target: str) -> None:
    columns = [str(c) for c in frame.columns]
    shown = ", ".join(columns[:20]) + (" ..." if len(columns) > 20 else "")
    for option, column in (("target", target), ("time_column", config.time_column), ("group_column", config.group_column)):
        if column and column not in frame.columns:
            raise ConfigError(f"{option}={column!r} is not a column of data={config.data!r}; columns are: {shown}.")
    if config.time_column == target or config.group_column == target:
        raise ConfigError(f"target={target!r} cannot also be the time or group column; choose another target.")


def _check_task(y: pd.Series, task: str, target: str) -> None:
    n_unique = y.nunique(dropna=True)
    if task in ("binary", "multiclass") and n_unique < 2:
        raise ConfigError(
            f"target {target!r} has a single class ({y.dropna().iloc[0]!r}); "
            "classification needs at least two classes, so choose another target."
        )
    if task == "binary" and n_unique > 2:
        raise ConfigError(f"task=binary but target {target!r} has {n_unique} classes; use task=multiclass.")
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
            raise ConfigError(
                f"task=regression needs a numeric target, but {target!r} has dtype {y.dtype}; "
                "use task=auto or a numeric target."
            )
        if n_unique < 2:
            raise ConfigError(f"target {target!r} is constant; regression needs a target that varies.")


def _encode_target(y: pd.Series, task: str) -> tuple[np.ndarray, np.ndarray | None]:
    if task == "regression":
        return y.to_numpy(dtype=float), None
    classes, codes = np.unique(y.astype(str).to_numpy() if not pd.api.types.is_numeric_dtype(y) else y.to_numpy(), return_inverse=True)
    return codes.astype(np.int64), classes


def _split_holdout(
    features: pd.DataFrame, y: np.ndarray, task: str, config: TuneConfig, groups: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    index = np.arange(len(features))
    n_test = int(np.ceil(config.test_size * len(index)))
    if len(index) - n_test < 2 * config.n_folds:
        raise ConfigError(
            f"data={config.data!r} has {len(index)} rows, too few for test_size={config.test_size} "
            f"and n_folds={config.n_folds}; supply more rows or lower n_folds."
        )
    if config.time_column:
        order = np.argsort(pd.to_datetime(features[config.time_column], errors="coerce").to_numpy()
                           if not pd.api.types.is_numeric_dtype(features[config.time_column])
                           else features[config.time_column].to_numpy(), kind="stable")
        # Training rows stay in time order, because the time-series splitter
        # cuts folds by position; ``gap`` rows before the held-out period are dropped.
        n_train = len(order) - n_test - config.gap
        if n_train < 2 * config.n_folds:
            raise ConfigError(
                f"data={config.data!r} has {len(order)} rows; after the held-out {n_test} rows "
                f"(test_size={config.test_size}) and gap={config.gap}, {n_train} training rows remain, "
                f"too few for n_folds={config.n_folds}; lower gap, test_size or n_folds."
            )
        return order[:n_train], order[-n_test:]
    if groups is not None:
        splitter = GroupShuffleSplit(n_splits=1, test_size=config.test_size, random_state=config.seed)
        train_idx, test_idx = next(splitter.split(features, y, groups))
        return train_idx, test_idx
    stratify = y if task != "regression" else None
    if stratify is not None:
        counts = np.bincount(y)
        if counts.min() < 2:
            rare = int(np.argmin(counts))
            raise ConfigError(
                f"class {rare} of the target has {counts.min()} row, too few to stratify the held-out split; "
                "drop that class or collect more rows."
            )
    train_idx, test_idx = train_test_split(
        index, test_size=config.test_size, random_state=config.seed, stratify=stratify
    )
    return np.sort(train_idx), np.sort(test_idx)
