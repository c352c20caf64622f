"""Interface shared by every model family."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

# Called after boosting rounds with (round index, value of the study's scorer
# on the validation set); see models/_progress.py for which rounds.
RoundCallback = Callable[[int, float], None]
# Boosting rounds between two reports to the pruner; each report is a
# storage write, so reporting every round would dominate fast trials.
REPORT_EVERY_ROUNDS = 10


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What one fit on a training fold produced.

    ``best_iteration`` is the number of rounds that early stopping kept
    (None for models without rounds); ``stopped_early`` is False when the
    booster ran to its round cap; ``curve`` contains the validation metric
    per round.
    """

    estimator: Any
    best_iteration: int | None = None
    stopped_early: bool = False
    curve: tuple[float, ...] = ()
    curve_metric: str = ""


@dataclasses.dataclass(frozen=True)
class FitContext:
    """Settings that do not depend on the sampled hyperparameters."""

    task: str
    n_classes: int
    metric: str
    seed: int
    n_threads: int
    early_stopping_rounds: int
    max_boost_rounds: int


class ModelAdapter:
    """Build and fit one model family through its supported API."""

    name: str = ""
    # True for boosters whose rounds are chosen by early stopping.
    iterative: bool = False
    tasks: tuple[str, ...] = ("binary", "multiclass", "regression")

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
        """Fit with early stopping on (X_val, y_val) when the model has rounds."""
        raise NotImplementedError

    def fit_final(
        self, kwargs: dict[str, Any], context: FitContext, X: pd.DataFrame, y: np.ndarray, n_rounds: int | None
    ) -> Any:
        """Fit on all training rows with a fixed number of rounds (ignored without rounds)."""
        raise NotImplementedError
