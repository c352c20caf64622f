"""Staged tuning: the most impactful parameters first, then the rest around their winners.

Stage 1 tunes the tier-1 parameters while every other parameter stays at
the library default. Stage 2 fixes the stage-1 winners (through Optuna's
``PartialFixedSampler``, so the trials still record them) and tunes the
rest. Both stages share the study budget: stage 1 gets half of the trials
and half of the timeout. Each trial stores its stage in the ``stage`` user
attribute, which the MLflow mirror writes as the ``mlflow_hpo.stage`` tag.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import TYPE_CHECKING, Any, Protocol

import optuna

from mlflow_hpo._errors import ConfigError
from mlflow_hpo.config import TuneConfig
from mlflow_hpo.spaces import SearchSpace

if TYPE_CHECKING:
    from mlflow_hpo.study import Job

_logger = logging.getLogger(__name__)

STAGE_ATTR = "stage"
# Study user attribute with the stage that trials started now belong to.
CURRENT_STAGE_ATTR = "mlflow_hpo.current_stage"


def check_staged(config: TuneConfig, space: SearchSpace) -> None:
    """Raise ConfigError if ``staged=true`` cannot split ``space`` into two stages."""
    if not config.staged:
        return
    if config.is_multi_objective:
        raise ConfigError(
            f"staged=true needs one objective to pick the stage-1 winner, got metric={config.metric!r}; "
            "pass a single metric or staged=false."
        )
    if config.workers > 1:
        raise ConfigError(
            f"staged=true runs its two stages in this process, so it cannot share them with "
            f"workers={config.workers}; use workers=1 (n_jobs runs trials in parallel threads) or staged=false."
        )
    first = [p.name for p in space if p.tier == 1]
    rest = [p.name for p in space if p.tier > 1]
    if not first or not rest:
        raise ConfigError(
            f"staged=true needs parameters of tier 1 and of a higher tier, but every parameter has tier "
            f"{space.params[0].tier if space.params else 1}; set tier: in the space file, or use staged=false."
        )


def suggest_values(job: Job, trial: optuna.Trial) -> dict[str, Any]:
    """Sample the trial's parameters; in staged tuning, only those of the current stage."""
    # NOTE: a `mlflow-hpo worker` that joins a staged study in stage 2 samples
    # the tier-1 parameters freely, because only the process that ran stage 1
    # installs the PartialFixedSampler with the stage-1 winners.
    if not job.config.staged:
        return job.space.suggest(trial)
    stage = int(trial.study.user_attrs.get(CURRENT_STAGE_ATTR, 1))
    trial.set_user_attr(STAGE_ATTR, stage)
    if stage == 1:
        return job.space.suggest(trial, only=[p.name for p in job.space if p.tier == 1])
    return job.space.suggest(trial)


class StageLoop(Protocol):
    """The part of `mlflow_hpo.trial_loop.TrialLoop` that staged tuning drives."""

    study: optuna.Study
    n_trials: int | None
    timeout: float | None

    def run(self) -> int: ...


def run_in_stages(loop: StageLoop, job: Job) -> int:
    """Run stage 1 and then stage 2 through ``loop``; return the number of trials run here.

    ``loop.n_trials`` is the budget of the whole study. Stage 1 ends when the
    study contains half of it, and stage 2 when it contains all of it.
    """
    study = loop.study
    n_trials, timeout = loop.n_trials, loop.timeout
    stage1_trials = None if n_trials is None else max(1, n_trials // 2)
    base_sampler = study.sampler
    started = time.monotonic()
    n_run = 0

    trials = study.get_trials(deepcopy=False)
    in_stage2 = any(t.user_attrs.get(STAGE_ATTR) == 2 for t in trials)
    finished = sum(1 for t in trials if t.state.is_finished())
    if not in_stage2 and (stage1_trials is None or finished < stage1_trials):
        study.set_user_attr(CURRENT_STAGE_ATTR, 1)
        _logger.info(
            "Stage 1: tuning %s with the other parameters at library defaults.",
            ", ".join(p.name for p in job.space if p.tier == 1),
        )
        loop.n_trials, loop.timeout = stage1_trials, None if timeout is None else timeout / 2
        n_run += loop.run()

    winners = stage1_winners(study, job)
    with warnings.catch_warnings():
        # PartialFixedSampler is marked experimental in Optuna 5.1.
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.sampler = optuna.samplers.PartialFixedSampler(winners, base_sampler)
    study.set_user_attr(CURRENT_STAGE_ATTR, 2)
    _logger.info("Stage 2: tuning the other parameters with the stage-1 winners fixed: %s.", winners)
    remaining = None if timeout is None else timeout - (time.monotonic() - started)
    if remaining is not None and remaining <= 0:
        _logger.info("Stage 2 skipped: the timeout was used up in stage 1.")
        return n_run
    loop.n_trials, loop.timeout = n_trials, remaining
    n_run += loop.run()
    return n_run


def stage1_winners(study: optuna.Study, job: Job) -> dict[str, Any]:
    """Return the tier-1 values of the best completed stage-1 trial ({} if none completed)."""
    completed = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.user_attrs.get(STAGE_ATTR) == 1 and t.value is not None
    ]
    if not completed:
        _logger.warning("Stage 1 completed no trial, so stage 2 tunes every parameter.")
        return {}
    pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
    best = pick(completed, key=lambda t: float(t.value))  # type: ignore[arg-type]
    tier1 = {p.name for p in job.space if p.tier == 1}
    return {name: value for name, value in best.params.items() if name in tier1}
