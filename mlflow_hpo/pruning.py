"""Pruner choice and the reports that feed it on one step axis.

Boosters report on a round axis, at step ``fold * max_boost_rounds +
round``. The value there is the study scorer on the inner validation sets,
averaged over the folds seen so far: the best value of every finished fold
and the current value of the running fold. Steps increase across folds and
never repeat, and a trial is compared with other trials at the same fold and
round while every fold it has seen counts. Models without rounds report on a
fold axis: step ``fold``, with the fold's CV score (Wilcoxon) or the mean of
the CV scores so far (median, Hyperband).

On small data, ``auto`` judges boosters on the fold axis too. There the
inner validation part of a fold has a few dozen rows, so its value at one
round is mostly noise. A low learning rate also trails at early rounds, so
the round axis prunes it before its folds stop early. A fold trains in a
fraction of a second there, so pruning inside a fold saves little time.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

import optuna

from mlflow_hpo.config import TuneConfig
from mlflow_hpo.cv import SMALL_DATA_ROWS
from mlflow_hpo.models._base import REPORT_EVERY_ROUNDS

if TYPE_CHECKING:
    from mlflow_hpo.cv import Splitter
    from mlflow_hpo.models import ModelAdapter
    from mlflow_hpo.strategy import Strategy
    from mlflow_hpo.study import Job

__all__ = ["REPORT_EVERY_ROUNDS", "FoldWindowMedianPruner", "PrunerPlan", "choose_pruner", "make_pruner"]

_logger = logging.getLogger(__name__)

# The fold-wise pruners need this many folds to judge a trial before its end.
MIN_FOLDS_FOR_FOLD_PRUNING = 5
MEDIAN_STARTUP_TRIALS = 5
MEDIAN_WARMUP_ROUNDS = 10
# On the fold axis the median pruner may judge from the second fold on.
MEDIAN_WARMUP_FOLDS = 1
WILCOXON_P_THRESHOLD = 0.1
HYPERBAND_REDUCTION_FACTOR = 3


@dataclasses.dataclass(frozen=True)
class PrunerPlan:
    """Which pruner a study uses, on which step axis, and why.

    ``axis`` is ``rounds`` (boosting rounds of every fold on one axis),
    ``folds`` (one step per fold) or empty when nothing is pruned;
    ``stride`` is the number of steps that one fold takes on the axis.
    """

    name: str
    reason: str
    axis: str = ""
    stride: int = 1


class FoldWindowMedianPruner(optuna.pruners.MedianPruner):
    """Optuna's median rule, applied to the fold that a trial is in.

    ``MedianPruner`` compares the best value a trial ever reported with the
    median of other trials at the current step. Across folds that best value
    could come from an earlier, easier fold, so this pruner keeps only the
    steps of the current fold (``stride`` steps per fold) when it judges.
    The running mean over folds that the reports carry still includes every
    fold the trial has seen.
    """

    def __init__(self, *, stride: int, n_startup_trials: int, n_warmup_steps: int) -> None:
        super().__init__(n_startup_trials=n_startup_trials, n_warmup_steps=n_warmup_steps)
        self.stride = stride

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        start = step // self.stride * self.stride
        current_fold = copy.copy(trial)
        current_fold.intermediate_values = {s: v for s, v in trial.intermediate_values.items() if s >= start}
        return super().prune(study, current_fold)


def choose_pruner(config: TuneConfig, adapter: ModelAdapter, strategy: Strategy, splitter: Splitter) -> PrunerPlan:
    """Return the pruner plan of ``config.pruner``; grid search is never pruned."""
    if strategy.name == "grid":
        return PrunerPlan("none", "grid search evaluates every combination once, so no trial is pruned")
    if config.is_multi_objective:
        return PrunerPlan("none", "Optuna prunes single-objective studies only")
    name = config.pruner
    if name == "none":
        return PrunerPlan("none", "pruner=none requested")
    rounds = adapter.iterative and name != "wilcoxon"
    if name == "auto":
        if adapter.iterative and 0 < splitter.n_rows < SMALL_DATA_ROWS:
            return PrunerPlan(
                "median",
                f"auto chose median on completed folds: {splitter.n_rows} training rows are fewer than "
                f"{SMALL_DATA_ROWS}, too few to judge a trial by its rounds; one step per fold",
                "folds",
                1,
            )
        if adapter.iterative:
            name, reason = "median", f"auto chose median: {adapter.name} reports every boosting round"
        elif splitter.n_splits >= MIN_FOLDS_FOR_FOLD_PRUNING:
            name, reason = "wilcoxon", f"auto chose wilcoxon: {splitter.n_splits} folds compared fold by fold"
        else:
            return PrunerPlan(
                "none",
                f"auto does not prune {adapter.name} with {splitter.n_splits} folds; fold-wise pruning "
                f"needs at least {MIN_FOLDS_FOR_FOLD_PRUNING}",
            )
    else:
        reason = f"pruner={name} requested"
    if rounds:
        return PrunerPlan(name, reason + "; one step per boosting round", "rounds", config.max_boost_rounds)
    return PrunerPlan(name, reason + "; one step per fold", "folds", 1)


def make_pruner(
    config: TuneConfig, adapter: ModelAdapter, strategy: Strategy, splitter: Splitter
) -> optuna.pruners.BasePruner:
    """Return the Optuna pruner of the plan that ``choose_pruner`` makes."""
    plan = choose_pruner(config, adapter, strategy, splitter)
    if plan.name == "median":
        warmup = MEDIAN_WARMUP_ROUNDS if plan.axis == "rounds" else MEDIAN_WARMUP_FOLDS
        return FoldWindowMedianPruner(stride=plan.stride, n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=warmup)
    if plan.name == "hyperband":
        per_fold = plan.stride if plan.axis == "rounds" else 1
        return optuna.pruners.HyperbandPruner(
            min_resource=REPORT_EVERY_ROUNDS if plan.axis == "rounds" else 1,
            max_resource=per_fold * splitter.n_splits,
            reduction_factor=HYPERBAND_REDUCTION_FACTOR,
        )
    if plan.name == "wilcoxon":
        with warnings.catch_warnings():
            # Optuna 5.1 still marks WilcoxonPruner experimental; choosing it is deliberate here.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.pruners.WilcoxonPruner(p_threshold=WILCOXON_P_THRESHOLD)
    return optuna.pruners.NopPruner()


def pruner_label(job: Job) -> str:
    """Return the pruner name and the reason for it, for tags and the summary."""
    plan = choose_pruner(job.config, job.adapter, job.strategy, job.splitter)
    return f"{plan.name} ({plan.reason})"


def reporting_hooks(
    job: Job, trial: optuna.Trial | None
) -> tuple[Callable[[int, int, float], None] | None, Callable[[int, float], None] | None]:
    """Return (on_round, on_fold) callbacks that report to ``trial`` on one step axis."""
    plan = choose_pruner(job.config, job.adapter, job.strategy, job.splitter)
    if trial is None or not plan.axis:
        return None, None
    if plan.axis == "rounds":
        return _round_reporter(trial, plan.stride), None
    return None, _fold_reporter(trial, running_mean=plan.name != "wilcoxon")


def _round_reporter(trial: optuna.Trial, stride: int) -> Callable[[int, int, float], None]:
    fold_best: dict[int, float] = {}

    def on_round(fold: int, round_index: int, value: float) -> None:
        fold_best[fold] = max(value, fold_best.get(fold, value))
        if round_index % REPORT_EVERY_ROUNDS:
            return
        finished = [best for seen, best in fold_best.items() if seen < fold]
        mean_so_far = (sum(finished) + value) / (len(finished) + 1)
        trial.report(mean_so_far, fold * stride + round_index)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned at fold {fold}, round {round_index}")

    return on_round


def _fold_reporter(trial: optuna.Trial, *, running_mean: bool) -> Callable[[int, float], None]:
    scores: list[float] = []

    def on_fold(fold: int, score: float) -> None:
        scores.append(score)
        value = sum(scores) / len(scores) if running_mean else score
        trial.report(value, fold)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after fold {fold}")

    return on_fold
