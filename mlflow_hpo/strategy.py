"""Search strategy: the sampler of the study and why it was chosen."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import optuna

from mlflow_hpo._errors import ConfigError
from mlflow_hpo.config import TuneConfig
from mlflow_hpo.spaces import SearchSpace

# Rule used in practice: enumerate small grids, sample medium discrete spaces
# at random, and model larger or continuous spaces with TPE.
GRID_MAX_COMBINATIONS = 50
GRID_MAX_PARAMS = 4
RANDOM_MAX_COMBINATIONS = 500
RANDOM_MIN_TRIALS = 100


@dataclasses.dataclass(frozen=True)
class Strategy:
    """The sampler of the study and why it was chosen."""

    name: str
    reason: str
    sampler: optuna.samplers.BaseSampler
    pruner_name: str = "none"
    min_trials: int | None = None


def choose_strategy(config: TuneConfig, space: SearchSpace) -> Strategy:
    """Return the sampler for ``config.strategy``; ``auto`` applies the size rule."""
    size = space.grid_size()
    size_text = "continuous" if math.isinf(size) else f"{int(size)} combinations"
    name = config.strategy
    if name == "auto":
        if size < GRID_MAX_COMBINATIONS and len(space) <= GRID_MAX_PARAMS and not space.is_conditional():
            name, why = "grid", f"{size_text} over {len(space)} parameters: every combination once"
        elif size <= RANDOM_MAX_COMBINATIONS:
            name, why = "random", f"{size_text}: random search covers a medium discrete space well"
        else:
            name, why = "tpe", f"{size_text} space over {len(space)} parameters: TPE models where good values lie"
        reason = f"auto chose {name}: {why}"
    else:
        reason = f"{name} requested"

    if name == "grid":
        grid = space.grid()
        if grid is None:
            raise ConfigError(
                "strategy=grid needs a step on every float parameter of the space; "
                "add step to continuous ranges or use strategy=tpe."
            )
        if len(space) > GRID_MAX_PARAMS and config.strategy == "grid":
            raise ConfigError(
                f"strategy=grid over {len(space)} parameters ({size_text}) spends the budget on a few "
                "directions; use strategy=random or strategy=tpe."
            )
        sampler: optuna.samplers.BaseSampler = optuna.samplers.GridSampler(grid, seed=config.seed)
        return Strategy("grid", reason, sampler, min_trials=int(size))
    if name == "random":
        return Strategy("random", reason, optuna.samplers.RandomSampler(seed=config.seed), min_trials=RANDOM_MIN_TRIALS)
    if name == "nsga2":
        return Strategy("nsga2", reason, optuna.samplers.NSGAIISampler(seed=config.seed))
    sampler = optuna.samplers.TPESampler(
        seed=config.seed, multivariate=True, group=space.is_conditional(), constant_liar=config.n_jobs > 1
    )
    return Strategy("tpe", reason, sampler)


def pruner_name(pruner: optuna.pruners.BasePruner) -> str:
    return type(pruner).__name__


def describe(value: Any) -> str:
    return str(value)
