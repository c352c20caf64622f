"""Booster adapters: early stopping through each library's API, round reports, metric names."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer, make_classification
from sklearn.metrics import f1_score, roc_auc_score

from mlflow_hpo._errors import TrialError
from mlflow_hpo.models import FitContext, get_adapter
from mlflow_hpo.models._base import REPORT_EVERY_ROUNDS

BOOSTERS = ("lightgbm", "xgboost")


def _binary(n_rows: int = 600, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    X, y = make_classification(n_rows, n_features=8, n_informative=4, flip_y=0.1, random_state=seed)
    return pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])]), y


def _context(metric: str = "roc_auc", patience: int = 5, cap: int = 400) -> FitContext:
    return FitContext(
        task="binary",
        n_classes=2,
        metric=metric,
        seed=0,
        n_threads=1,
        early_stopping_rounds=patience,
        max_boost_rounds=cap,
    )


def _predict_proba_at(model: str, estimator: object, X: pd.DataFrame, n_rounds: int) -> np.ndarray:
    if model == "lightgbm":
        return estimator.predict_proba(X, num_iteration=n_rounds)[:, 1]  # type: ignore[attr-defined]
    return estimator.predict_proba(X, iteration_range=(0, n_rounds))[:, 1]  # type: ignore[attr-defined]


@pytest.mark.parametrize("model", BOOSTERS)
def test_early_stopping_stops_below_cap(model: str) -> None:
    X, y = _binary()
    result = get_adapter(model, "binary").fit(
        {"learning_rate": 0.3}, _context(patience=5, cap=400), X[:400], y[:400], X[400:], y[400:]
    )

    assert result.stopped_early
    assert result.best_iteration is not None
    assert result.best_iteration < 400
    assert len(result.curve) < 400
    assert result.curve_metric == "auc"


@pytest.mark.parametrize("model", BOOSTERS)
def test_round_reports_are_validation_auc(model: str) -> None:
    X, y = _binary()
    reports: list[tuple[int, float]] = []
    result = get_adapter(model, "binary").fit(
        {"learning_rate": 0.3}, _context(), X[:400], y[:400], X[400:], y[400:], lambda r, v: reports.append((r, v))
    )

    assert [r for r, _ in reports] == list(range(len(reports)))
    assert result.best_iteration is not None
    # The first rounds predict few distinct values, where LightGBM's AUC
    # counts ties unlike scikit-learn; the refit model keeps best_iteration trees.
    checked = range(2, result.best_iteration)
    assert len(checked) >= 3
    for round_index in checked:
        expected = roc_auc_score(y[400:], _predict_proba_at(model, result.estimator, X[400:], round_index + 1))
        assert reports[round_index][1] == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("model", BOOSTERS)
def test_round_reports_ignore_training_rows(model: str) -> None:
    X, y = _binary()
    rng = np.random.default_rng(0)
    y_val = rng.permutation(y[400:])
    reports: list[float] = []
    get_adapter(model, "binary").fit(
        {"learning_rate": 0.3, "max_depth": 6},
        _context(patience=20),
        X[:400],
        y[:400],
        X[400:],
        y_val,
        lambda r, v: reports.append(v),
    )

    # Training AUC of such a booster is near 1; labels shuffled on the
    # validation rows leave nothing to learn there.
    assert max(reports) < 0.7


@pytest.mark.parametrize("model", BOOSTERS)
def test_scorer_without_booster_metric_computed(model: str) -> None:
    X, y = _binary()
    reports: list[tuple[int, float]] = []
    result = get_adapter(model, "binary").fit(
        {"learning_rate": 0.05},
        _context(metric="f1", patience=15),
        X[:400],
        y[:400],
        X[400:],
        y[400:],
        lambda r, v: reports.append((r, v)),
    )

    assert all(r % REPORT_EVERY_ROUNDS == 0 for r, _ in reports)
    assert result.best_iteration is not None
    checked = [(r, v) for r, v in reports if r < result.best_iteration]
    assert len(checked) >= 2
    for round_index, value in checked:
        proba = _predict_proba_at(model, result.estimator, X[400:], round_index + 1)
        assert value == pytest.approx(f1_score(y[400:], (proba > 0.5).astype(int)), abs=1e-9)


def test_metric_override_fails_first_round() -> None:
    X, y = _binary()
    reports: list[float] = []

    with pytest.raises(TrialError, match="at round 0, not the early-stopping metric 'auc'"):
        get_adapter("lightgbm", "binary").fit(
            {"metric": "binary_logloss"}, _context(), X[:400], y[:400], X[400:], y[400:], lambda r, v: reports.append(v)
        )
    assert reports == []


@pytest.mark.parametrize(
    ("model", "override", "message"),
    [
        ("lightgbm", {"metric": "aucc"}, "LightGBM evaluated no metric on the validation set at the first round"),
        ("xgboost", {"eval_metric": "aucc"}, "XGBoost rejected the early-stopping metric at the first round"),
    ],
)
def test_unknown_metric_name_fails_clearly(model: str, override: dict[str, str], message: str) -> None:
    X, y = _binary()

    with pytest.raises(TrialError, match=message):
        get_adapter(model, "binary").fit(override, _context(), X[:400], y[:400], X[400:], y[400:], lambda r, v: None)


def test_dart_rounds_are_capped() -> None:
    from mlflow_hpo.models._boosters import DART_MAX_ROUNDS, XGBoostAdapter

    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    context = FitContext(
        task="binary", n_classes=2, metric="roc_auc", seed=0, n_threads=1,
        early_stopping_rounds=5000, max_boost_rounds=2000,
    )

    result = XGBoostAdapter().fit(
        {"booster": "dart", "learning_rate": 0.3}, context, X.iloc[:400], y.iloc[:400].to_numpy(),
        X.iloc[400:], y.iloc[400:].to_numpy(),
    )

    assert result.estimator.n_estimators == DART_MAX_ROUNDS
    assert result.best_iteration is not None
    assert result.best_iteration <= DART_MAX_ROUNDS
