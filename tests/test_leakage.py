"""Early stopping on the scoring fold inflates CV scores; early stopping on an inner split does not.

Both variants evaluate the same LightGBM configurations with the same
stratified folds on noisy binary data (2,000 rows, 10% of labels flipped).
The leaky variant lets each fold's scoring rows choose its number of rounds,
as much tuning code does; ours uses the inner validation split of
``cross_validate``. Every fold model is also scored on 4,000 rows that
neither variant saw, so the gap between a CV score and the same models'
untouched-test score measures the optimism of that CV score.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
from sklearn.datasets import make_classification

from mlflow_hpo import TuneConfig
from mlflow_hpo.cv import choose_splitter, cross_validate, score_fold
from mlflow_hpo.metrics import resolve_objective
from mlflow_hpo.models import FitContext, FitResult
from mlflow_hpo.models._boosters import LightGBMAdapter
from mlflow_hpo.spaces import builtin_space

N_TRAIN = 2_000
N_TEST = 4_000
N_CONFIGS = 8
LABEL_NOISE = 0.10


def _noisy_binary() -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray]:
    X, y = make_classification(
        N_TRAIN + N_TEST, n_features=12, n_informative=5, n_redundant=2, flip_y=0.0, class_sep=0.7, random_state=11
    )
    rng = np.random.default_rng(11)
    flipped = rng.random(len(y)) < LABEL_NOISE
    y = np.where(flipped, 1 - y, y)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    return frame[:N_TRAIN], y[:N_TRAIN], frame[N_TRAIN:].reset_index(drop=True), y[N_TRAIN:]


def _configurations(n_rows: int) -> list[dict[str, object]]:
    space = builtin_space("lightgbm", "binary", n_rows=n_rows, n_features=12)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=5))
    configurations = []
    for _ in range(N_CONFIGS):
        trial = study.ask()
        configurations.append(space.model_kwargs(space.suggest(trial)))
        study.tell(trial, 0.0)
    return configurations


class _KeepingAdapter(LightGBMAdapter):
    """LightGBM adapter that keeps each fold's fitted model."""

    def __init__(self) -> None:
        self.fitted: list[Any] = []

    def fit(self, *args: Any, **kwargs: Any) -> FitResult:
        result = super().fit(*args, **kwargs)
        self.fitted.append(result.estimator)
        return result


@pytest.mark.slow
def test_leaky_early_stopping_inflates_cv() -> None:
    X, y, X_test, y_test = _noisy_binary()
    objective = resolve_objective("roc_auc", "binary")
    context = FitContext("binary", 2, "roc_auc", seed=0, n_threads=1, early_stopping_rounds=30, max_boost_rounds=400)
    splitter = choose_splitter(TuneConfig(cv="stratified", n_folds=5, seed=0), "binary", y, None)
    folds = list(splitter.splitter.split(X, y))

    leaky_gaps, honest_gaps = [], []
    for kwargs in _configurations(N_TRAIN):
        kwargs = {**kwargs, "learning_rate": max(float(kwargs["learning_rate"]), 0.05)}  # type: ignore[arg-type]

        leaky = _KeepingAdapter()
        leaky_scores = []
        for fold, (train_index, test_index) in enumerate(folds):
            # The scoring rows double as the early-stopping set.
            fitted = leaky.fit(kwargs, context, X.iloc[train_index], y[train_index], X.iloc[test_index], y[test_index])
            leaky_scores.append(score_fold(objective, fitted.estimator, X.iloc[test_index], y[test_index], fold))
        leaky_test = [objective.scorer(model, X_test, y_test) for model in leaky.fitted]
        leaky_gaps.append(np.mean(leaky_scores) - np.mean(leaky_test))

        ours = _KeepingAdapter()
        honest = cross_validate(ours, kwargs, context, X, y, splitter, objective)
        honest_test = [objective.scorer(model, X_test, y_test) for model in ours.fitted]
        honest_gaps.append(honest.mean - np.mean(honest_test))

    leaky_bias = float(np.mean(leaky_gaps))
    honest_bias = float(np.mean(honest_gaps))
    paired = np.array(leaky_gaps) - np.array(honest_gaps)
    paired_error = float(np.std(paired, ddof=1) / np.sqrt(N_CONFIGS))
    sampling_error = _auc_standard_error(float(np.mean(honest_test)), y)
    figures = f"leaky {leaky_bias:.4f}, ours {honest_bias:.4f}, AUC standard error {sampling_error:.4f}"

    assert int(np.sum(paired > 0)) >= N_CONFIGS - 2, figures
    assert paired.mean() > 2 * paired_error, figures
    assert leaky_bias > 0, figures
    assert abs(honest_bias) < 2 * sampling_error, figures


def _auc_standard_error(auc: float, y: np.ndarray) -> float:
    """Return the Hanley-McNeil (1982) standard error of an AUC measured on labels ``y``."""
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    q1 = auc / (2 - auc)
    q2 = 2 * auc**2 / (1 + auc)
    variance = auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)
    return float(np.sqrt(variance / (n_pos * n_neg)))
