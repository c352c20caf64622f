"""Warm start: run the best configurations of an earlier study of the same storage first."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import CategoricalDistribution

from mlflow_hpo._errors import ConfigError
from mlflow_hpo.spaces import SIGNATURE_ATTR, describe_changes, space_signature
from mlflow_hpo.storage import study_exists

if TYPE_CHECKING:
    from mlflow_hpo.study import Job

_logger = logging.getLogger(__name__)

# Best configurations of the earlier study to enqueue.
WARM_START_TRIALS = 5
WARM_START_ATTR = "warm_start_from"


def warm_start_configs(job: Job, storage: optuna.storages.BaseStorage) -> list[tuple[int, dict[str, Any]]]:
    """Return ``(trial number, params)`` of the earlier study's best trials that fit the current space.

    Raises:
        ConfigError: If the earlier study does not exist, or none of its best
            configurations fits the current space (with the difference per parameter).
    """
    name = job.config.warm_start
    if not name:
        return []
    if job.strategy.name == "grid":
        raise ConfigError(
            f"warm_start={name!r} has no effect with strategy=grid, which runs every combination once; "
            "drop warm_start or use strategy=tpe."
        )
    if not study_exists(storage, name):
        known = optuna.study.get_all_study_names(storage)
        raise ConfigError(
            f"warm_start={name!r} is not a study in this storage; use one of: {', '.join(known) or '(none)'}."
        )
    earlier = optuna.load_study(study_name=name, storage=storage)
    if earlier.user_attrs.get("metric") not in (None, job.objective.name):
        warnings.warn(
            f"warm_start={name!r} was tuned for {earlier.user_attrs['metric']}, not {job.objective.name}; "
            "its best configurations are used as starting points all the same.",
            UserWarning,
            stacklevel=2,
        )
    completed = [t for t in earlier.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    reverse = earlier.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    completed.sort(key=lambda t: t.values[0], reverse=reverse)
    # More enqueued trials than the budget would stay WAITING and run at the next resume.
    limit = WARM_START_TRIALS if job.config.n_trials is None else min(WARM_START_TRIALS, job.config.n_trials)
    best = completed[:limit]

    distributions = job.space.distributions()
    fitting: list[tuple[int, dict[str, Any]]] = []
    misfits: list[str] = []
    for trial in best:
        problem = _misfit(trial.params, distributions)
        if problem:
            misfits.append(f"trial {trial.number}: {problem}")
        else:
            fitting.append((trial.number, dict(trial.params)))
    if best and not fitting:
        changes = describe_changes(earlier.user_attrs.get(SIGNATURE_ATTR) or {}, space_signature(job.space))
        raise ConfigError(
            f"warm_start={name!r} has a search space that does not fit this one "
            f"({'; '.join(changes or misfits)}); use a study with the same parameters, or drop warm_start."
        )
    if misfits:
        warnings.warn(
            f"warm_start={name!r}: {len(misfits)} of its best {len(best)} configurations do not fit the "
            f"current space and are skipped ({'; '.join(misfits)}).",
            UserWarning,
            stacklevel=2,
        )
    return fitting


def _misfit(params: dict[str, Any], distributions: dict[str, Any]) -> str:
    for name, value in params.items():
        dist = distributions.get(name)
        if dist is None:
            return f"{name} is not a parameter of the current space"
        if isinstance(dist, CategoricalDistribution):
            if value not in dist.choices:
                return f"{name}={value!r} is not among the choices {list(dist.choices)}"
        elif isinstance(value, (bool, str)) or not dist._contains(dist.to_internal_repr(value)):
            return f"{name}={value!r} is outside {dist.low:g}..{dist.high:g}"
    return ""


def enqueue_warm_start(study: optuna.Study, job: Job, configs: list[tuple[int, dict[str, Any]]]) -> None:
    """Enqueue ``configs`` in a study that has no trial yet (a resumed study is left alone)."""
    if not configs or study.get_trials(deepcopy=False):
        return
    for number, params in configs:
        study.enqueue_trial(params, user_attrs={WARM_START_ATTR: f"{job.config.warm_start}#{number}"})
    _logger.info(
        "Warm start: enqueued the %d best configurations of study %s.", len(configs), job.config.warm_start
    )
