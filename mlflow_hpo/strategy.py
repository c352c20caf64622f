"""Search strategy: the sampler of the study and why it was chosen."""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from collections.abc import Sequence
from typing import Any

import optuna

from mlflow_hpo._errors import ConfigError
from mlflow_hpo.config import TuneConfig
from mlflow_hpo.spaces import SearchSpace

_logger = logging.getLogger(__name__)

# Rule used in practice: enumerate small grids, sample medium discrete spaces
# at random, and model larger or continuous spaces, or expensive trials, with TPE.
GRID_MAX_COMBINATIONS = 50
GRID_MAX_PARAMS = 4
RANDOM_MAX_COMBINATIONS = 500
RANDOM_MIN_TRIALS = 100
# Estimated trial cost (rows fitted per trial, summed over folds) above which
# auto prefers TPE to random search, because 100 random trials would cost too much.
EXPENSIVE_TRIAL_ROWS = 2_000_000
# A uniform range whose high/low ratio exceeds this spans more than three
# orders of magnitude, so most samples land in its top decade.
UNIFORM_MAX_RATIO = 1000.0


@dataclasses.dataclass(frozen=True)
class Strategy:
    """The sampler of the study and why it was chosen.

    ``min_trials`` is the number of trials the strategy needs: the grid size
    for grid search (every combination once), 100 when ``auto`` picked
    random search, None otherwise. See `trial_budget`.
    """

    name: str
    reason: str
    sampler: optuna.samplers.BaseSampler
    pruner_name: str = "none"
    min_trials: int | None = None


class _GridSampler(optuna.samplers.GridSampler):
    """GridSampler that tolerates trials finished outside ``study.optimize``.

    Optuna's GridSampler calls ``study.stop()`` once every grid point is
    visited, which raises RuntimeError for a trial finished through ask and tell.
    There the trial budget (set to the grid size by `trial_budget`) ends the
    study instead.
    """

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: optuna.trial.TrialState,
        values: Sequence[float] | None,
    ) -> None:
        if study._thread_local.in_optimize_loop:
            super().after_trial(study, trial, state, values)


def choose_strategy(
    config: TuneConfig, space: SearchSpace, *, n_rows: int = 0, n_splits: int = 1
) -> Strategy:
    """Return the sampler for ``config.strategy``; ``auto`` applies the size rule.

    Args:
        config: The job configuration (strategy, seed, n_jobs, staged).
        space: The search space.
        n_rows: Training rows, for the estimated trial cost (0 when unknown).
        n_splits: Cross-validation fits per trial.

    Raises:
        ConfigError: When grid search is requested on a space it cannot
            enumerate sensibly (continuous, conditional, or more than 4 parameters).
    """
    warn_wide_uniform_ranges(space)
    size = space.grid_size()
    size_text = "a continuous space" if math.isinf(size) else f"{int(size)} combinations"
    cost_rows = n_rows * n_splits
    cost_text = f"estimated trial cost {n_splits} fits on {n_rows} rows"
    name = config.strategy
    min_trials: int | None = None
    if name == "auto":
        if size < GRID_MAX_COMBINATIONS and len(space) <= GRID_MAX_PARAMS and not space.is_conditional() and not config.staged:
            name, rationale = "grid", f"{size_text} over {len(space)} parameters, so every combination runs once"
        elif size <= RANDOM_MAX_COMBINATIONS and cost_rows < EXPENSIVE_TRIAL_ROWS:
            name, rationale = "random", (
                f"{size_text} over {len(space)} parameters ({cost_text}), a medium discrete space "
                f"that random search covers in {RANDOM_MIN_TRIALS} or more trials"
            )
            min_trials = RANDOM_MIN_TRIALS
        elif size <= RANDOM_MAX_COMBINATIONS:
            name, rationale = "tpe", (
                f"{size_text} over {len(space)} parameters, but {cost_text} makes "
                f"{RANDOM_MIN_TRIALS} random trials expensive, so TPE models where good values lie"
            )
        else:
            name, rationale = "tpe", (
                f"{size_text} over {len(space)} parameters ({cost_text}), too large to enumerate, "
                "so TPE models where good values lie"
            )
        reason = f"auto chose {name}: {rationale}"
    else:
        reason = f"strategy={name} requested ({size_text} over {len(space)} parameters)"

    if name == "grid":
        return Strategy("grid", reason, _grid_sampler(config, space), min_trials=int(size))
    if name == "random":
        return Strategy("random", reason, optuna.samplers.RandomSampler(seed=config.seed), min_trials=min_trials)
    if name == "nsga2":
        return Strategy("nsga2", reason, optuna.samplers.NSGAIISampler(seed=config.seed))
    sampler = optuna.samplers.TPESampler(
        seed=config.seed, multivariate=True, group=space.is_conditional(), constant_liar=config.n_jobs > 1
    )
    return Strategy("tpe", reason, sampler)


def _grid_sampler(config: TuneConfig, space: SearchSpace) -> optuna.samplers.BaseSampler:
    """Return the grid sampler of ``space``, or raise ConfigError with the strategy to use instead."""
    if config.staged:
        raise ConfigError(
            "strategy=grid runs every combination once, so staged=true has nothing to split into stages; "
            "use strategy=tpe with staged=true, or staged=false."
        )
    if space.is_conditional():
        conditional = [p.name for p in space if p.condition is not None]
        raise ConfigError(
            f"strategy=grid cannot enumerate conditional parameters ({', '.join(conditional)}), because "
            "inactive branches would repeat configurations; use strategy=random or strategy=tpe."
        )
    continuous = space.continuous_params()
    if continuous:
        raise ConfigError(
            f"strategy=grid needs a finite set of values, but {', '.join(continuous)} "
            f"{'is a continuous range' if len(continuous) == 1 else 'are continuous ranges'}; "
            "add step: to each float range, or use strategy=tpe."
        )
    if len(space) > GRID_MAX_PARAMS:
        raise ConfigError(
            f"strategy=grid over {len(space)} parameters ({int(space.grid_size())} combinations) spends the "
            f"budget on a few values per parameter; use strategy=random or strategy=tpe, or grid over at most "
            f"{GRID_MAX_PARAMS} parameters."
        )
    grid = space.grid()
    assert grid is not None
    return _GridSampler(grid, seed=config.seed)


def warn_wide_uniform_ranges(space: SearchSpace) -> None:
    """Warn about uniform ranges spanning more than three orders of magnitude."""
    for param in space:
        if param.kind == "categorical" or param.log:
            continue
        assert param.low is not None and param.high is not None
        if param.low > 0 and param.high / param.low > UNIFORM_MAX_RATIO:
            warnings.warn(
                f"parameter {param.name} is sampled uniformly over [{param.low:g}, {param.high:g}], "
                f"more than 3 orders of magnitude, so most trials land in the top decade; "
                "set log: true for this parameter.",
                UserWarning,
                stacklevel=2,
            )


def trial_budget(n_trials: int | None, strategy: Strategy) -> int | None:
    """Return the number of finished trials the study should hold under ``strategy``.

    Grid search runs exactly the grid size (every combination once), and
    random search picked by ``auto`` runs at least `RANDOM_MIN_TRIALS`.
    A timeout-only budget (``n_trials`` None) is left unchanged.
    """
    if n_trials is None or strategy.min_trials is None:
        return n_trials
    budget = strategy.min_trials if strategy.name == "grid" else max(n_trials, strategy.min_trials)
    if budget != n_trials:
        _logger.info(
            "Running %d trials instead of n_trials=%d: %s needs %s.",
            budget,
            n_trials,
            strategy.name,
            "every grid combination exactly once"
            if strategy.name == "grid"
            else f"at least {strategy.min_trials} trials to cover the space",
        )
    return budget


def pruner_name(pruner: optuna.pruners.BasePruner) -> str:
    return type(pruner).__name__


def describe(value: Any) -> str:
    return str(value)
