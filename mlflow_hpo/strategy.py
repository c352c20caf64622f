"""Search strategy (sampler), pruner, and the reports that feed the pruner."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import optuna

from mlflow_hpo._errors import ConfigError
from mlflow_hpo.config import TuneConfig
from mlflow_hpo.spaces import SearchSpace

if TYPE_CHECKING:
    from mlflow_hpo.cv import Splitter
    from mlflow_hpo.models import ModelAdapter
    from mlflow_hpo.study import Job

# Rule used in practice: enumerate small grids, sample medium discrete spaces
# at random, and model larger or continuous spaces with TPE.
GRID_MAX_COMBINATIONS = 50
GRID_MAX_PARAMS = 4
RANDOM_MAX_COMBINATIONS = 500
RANDOM_MIN_TRIALS = 100
# Boosting rounds between two reports to the pruner; each report is a
# storage write, so reporting every round would dominate fast trials.
REPORT_EVERY_ROUNDS = 10
# Booster metrics where lower is better; reports are negated so that the
# pruner compares values in the study's (maximize) direction.
_LOWER_IS_BETTER = ("logloss", "error", "rmse", "l2", "l1", "mae", "mlogloss", "merror")


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


def make_pruner(
    config: TuneConfig, adapter: ModelAdapter, strategy: Strategy, splitter: Splitter
) -> optuna.pruners.BasePruner:
    """Return the pruner of ``config.pruner``; grid search is never pruned."""
    name = config.pruner
    if strategy.name == "grid" or name == "none":
        return optuna.pruners.NopPruner()
    if name == "auto":
        if adapter.iterative:
            name = "median"
        elif splitter.n_splits >= 5:
            name = "wilcoxon"
        else:
            return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=10)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=config.max_boost_rounds * splitter.n_splits)
    return optuna.pruners.WilcoxonPruner(p_threshold=0.1)


def pruner_name(pruner: optuna.pruners.BasePruner) -> str:
    return type(pruner).__name__


def reporting_hooks(
    job: Job, trial: optuna.Trial | None
) -> tuple[Callable[[int, int, float], None] | None, Callable[[int, float], None] | None]:
    """Return (on_round, on_fold) callbacks that report to ``trial`` on one step axis.

    Boosters report every ``REPORT_EVERY_ROUNDS`` rounds at step
    ``fold * max_boost_rounds + round``, so steps increase across folds and
    never repeat. Other models report each fold score at step ``fold``.
    """
    if trial is None or isinstance(trial.study.pruner, optuna.pruners.NopPruner):
        return None, None
    if job.adapter.iterative:
        sign = -1.0 if job.context.metric and _lower_is_better(job) else 1.0
        stride = job.context.max_boost_rounds

        def on_round(fold: int, round_index: int, value: float) -> None:
            if round_index % REPORT_EVERY_ROUNDS:
                return
            trial.report(sign * value, fold * stride + round_index)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at fold {fold}, round {round_index}")

        return on_round, None

    def on_fold(fold: int, score: float) -> None:
        trial.report(score, fold)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after fold {fold}")

    return None, on_fold


def _lower_is_better(job: Job) -> bool:
    from mlflow_hpo.models._boosters import booster_metric

    library = 0 if job.adapter.name == "lightgbm" else 1
    metric = booster_metric(job.context.task, job.context.metric, library)
    return metric.endswith(_LOWER_IS_BETTER)


def describe(value: Any) -> str:
    return str(value)
