"""Report context: the study facts besides the trials, from a finished job or a stored study.

`write_study_report` stores this context as a study user attribute, so
`mlflow-hpo report` can rebuild every artifact from the Optuna storage
alone, also for a study that ran on another machine.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import TYPE_CHECKING, Any

import optuna

from mlflow_hpo.multi_objective import (
    BUILTIN_METRIC,
    LATENCY,
    LATENCY_METHOD,
    MODEL_SIZE,
    MODEL_SIZE_METHOD,
    objective_names,
)
from mlflow_hpo.storage import redact_url

if TYPE_CHECKING:
    from mlflow_hpo.study import Job

CONTEXT_ATTR = "mlflow_hpo_report"


@dataclasses.dataclass(frozen=True)
class ReportContext:
    """Study facts that the trials do not hold.

    Attributes:
        study_name: Optuna study name.
        objectives: Objective names in study order; the first is the CV scorer.
        directions: ``maximize`` or ``minimize`` per objective.
        config: The job's options as MLflow params (empty when unknown).
        strategy, strategy_reason, sampler, pruner: How trials were proposed and stopped.
        data: One line that describes the data, or "" when unknown.
        storage: Storage URL without its password.
        param_names: Search-space parameters in space order.
        details: Results of the final refit (CV and held-out scores, refit
            rule, selection); empty when the study never finished.
    """

    study_name: str
    objectives: list[str]
    directions: list[str]
    config: dict[str, str] = dataclasses.field(default_factory=dict)
    strategy: str = "unknown"
    strategy_reason: str = ""
    sampler: str = "unknown"
    pruner: str = "unknown"
    data: str = ""
    storage: str = ""
    param_names: list[str] = dataclasses.field(default_factory=list)
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def is_multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def seed(self) -> str:
        return self.config.get("seed", "unknown")

    def objective_method(self, name: str) -> str:
        """Return how a built-in secondary objective was measured, or "" for a scorer."""
        return {LATENCY: LATENCY_METHOD, MODEL_SIZE: MODEL_SIZE_METHOD}.get(name, "")

    def value_column(self, index: int) -> str:
        """Return the trials.csv column of objective ``index``."""
        if not self.is_multi_objective:
            return "value"
        name = self.objectives[index]
        return BUILTIN_METRIC.get(name, f"value_{name}")

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), default=_plain))


def context_from_job(study: optuna.Study, job: Job, details: dict[str, Any]) -> ReportContext:
    """Build the context of a job that has just finished its study."""
    from mlflow_hpo.pruning import pruner_label

    dataset = job.dataset
    data = (
        f"`{job.config.data}` ({dataset.task}, {len(dataset.X_train)} training rows, "
        f"{len(dataset.X_test)} held-out rows, digest {dataset.digest})"
    )
    return ReportContext(
        study_name=job.study_name,
        objectives=objective_names(job),
        directions=[d.name.lower() for d in study.directions],
        config=job.config.to_params(),
        strategy=job.strategy.name,
        strategy_reason=job.strategy.reason,
        sampler=type(study.sampler).__name__,
        pruner=f"{pruner_label(job)}; {_pruner_class(study.pruner)}",
        data=data,
        storage=redact_url(job.storage_url),
        param_names=list(job.space.names),
        details=json.loads(json.dumps(_with_objective_values(study, job, details), default=_plain)),
    )


def _with_objective_values(study: optuna.Study, job: Job, details: dict[str, Any]) -> dict[str, Any]:
    """Add the winner's value of every objective to ``details``."""
    number = details.get("best_trial")
    if "objective_values" in details or number is None:
        return details
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == number), None)
    if trial is None or not trial.values:
        return details
    return {**details, "objective_values": dict(zip(objective_names(job), trial.values, strict=True))}


def context_from_study(study: optuna.Study, storage: str = "") -> ReportContext:
    """Rebuild the context from the study's stored attribute, or from its trials alone."""
    stored = study.user_attrs.get(CONTEXT_ATTR)
    if isinstance(stored, dict):
        fields = {f.name for f in dataclasses.fields(ReportContext)}
        return ReportContext(**{k: v for k, v in stored.items() if k in fields})
    directions = [d.name.lower() for d in study.directions]
    metric = study.user_attrs.get("metric", "value")
    objectives = [metric] if len(directions) == 1 else [f"objective_{i}" for i in range(len(directions))]
    names: list[str] = []
    for trial in study.get_trials(deepcopy=False):
        names += [name for name in trial.params if name not in names]
    return ReportContext(
        study_name=study.study_name,
        objectives=objectives,
        directions=directions,
        sampler="unknown (the study was not finished by mlflow-hpo)",
        storage=redact_url(storage),
        param_names=names,
    )


def _plain(value: Any) -> Any:
    """Turn numpy scalars and other objects into JSON values."""
    if hasattr(value, "item"):
        item = value.item()
        return None if isinstance(item, float) and not math.isfinite(item) else item
    return str(value)


def _pruner_class(pruner: optuna.pruners.BasePruner) -> str:
    """Name the Optuna class of ``pruner``, and this package's subclass of it if there is one."""
    own = type(pruner)
    base = next(cls for cls in own.__mro__ if cls.__module__.startswith("optuna."))
    if base is own:
        return f"Optuna {own.__name__}"
    return f"Optuna {base.__name__} through {own.__module__}.{own.__name__}"
