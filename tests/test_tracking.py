"""Learning curves on child runs: averaged over folds, thinned to a fixed number of points."""

from __future__ import annotations

import math

import pytest

from mlflow_hpo.cv import CVResult
from mlflow_hpo.tracking import MAX_CURVE_POINTS, curve_steps


def test_short_curve_keeps_every_step() -> None:
    assert curve_steps([0.5, 0.6, 0.7]) == [0, 1, 2]


def test_long_curve_is_thinned_with_both_ends() -> None:
    steps = curve_steps([0.1] * 2000)

    assert len(steps) == MAX_CURVE_POINTS
    assert steps[0] == 0
    assert steps[-1] == 1999
    assert steps == sorted(set(steps))


def test_non_finite_points_are_dropped() -> None:
    assert curve_steps([math.nan, 1.0, math.inf, 2.0]) == [1, 3]


def test_mean_curve_covers_rounds_every_fold_ran() -> None:
    result = CVResult(scores=(0.8, 0.9, 0.7), curves=((0.5, 0.6, 0.7, 0.8), (0.3, 0.4), (0.1, 0.2, 0.3)))

    assert result.mean_curve() == pytest.approx([0.3, 0.4])


def test_mean_curve_empty_without_curves() -> None:
    assert CVResult(scores=(0.8, 0.9)).mean_curve() == []
    assert CVResult(scores=(0.8,), curves=((),)).mean_curve() == []
