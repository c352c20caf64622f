"""Learning curves on child runs: thinned to a fixed number of points."""

from __future__ import annotations

import math

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
