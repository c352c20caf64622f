"""Pruner choice and the reports that feed it on one step axis."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import optuna

from mlflow_hpo.config import TuneConfig

if TYPE_CHECKING:
    from mlflow_hpo.cv import Splitter
    from mlflow_hpo.models import ModelAdapter
    from mlflow_hpo.strategy import Strategy
    from mlflow_hpo.study import Job

# Boosting rounds between two reports to the pruner; each report is a
# storage write, so reporting every round would dominate fast trials.
REPORT_EVERY_ROUNDS = 10
# Booster metrics where lower is better; reports are negated so that the
# pruner compares values in the study's (maximize) direction.
_LOWER_IS_BETTER = ("logloss", "error", "rmse", "l2", "l1", "mae", "mlogloss", "merror")


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
