"""The study's parent run: finding, creating, re-attaching and closing it."""

from __future__ import annotations

import dataclasses
import logging
import os

import mlflow
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from mlflow_hpo._errors import ConfigError
from mlflow_hpo.tracking import TAG_ROLE, TAG_RUN_NAME, TAG_STUDY

_logger = logging.getLogger(__name__)

# Optuna study user attribute that stores the parent run id.
PARENT_ATTR = "mlflow_parent_run_id"
TAG_PARENT_POINTER = "mlflow_hpo.parent_run_id"


@dataclasses.dataclass(frozen=True)
class ParentRun:
    """The parent run of a study and who owns its lifetime.

    ``owned`` is True when this job created or re-opened the run and so
    must end it; a run opened by ``mlflow run`` or by the caller is ended
    by them.
    """

    run_id: str
    experiment_id: str
    owned: bool
    resumed: bool = False


def outer_run_id() -> str | None:
    """Return the run that encloses this job: the caller's active run or ``mlflow run``'s."""
    active = mlflow.active_run()
    if active is not None:
        return active.info.run_id
    return os.environ.get("MLFLOW_RUN_ID") or None


def resolve_experiment_id(client: MlflowClient, experiment_name: str, outer_run: str | None) -> str:
    """Return the experiment of the study: the outer run's, a named one, or the default."""
    if outer_run:
        return client.get_run(outer_run).info.experiment_id
    name = experiment_name or os.environ.get("MLFLOW_EXPERIMENT_NAME", "")
    if name:
        experiment = client.get_experiment_by_name(name)
        return experiment.experiment_id if experiment else client.create_experiment(name)
    experiment_id = os.environ.get("MLFLOW_EXPERIMENT_ID", "")
    if experiment_id:
        try:
            return client.get_experiment(experiment_id).experiment_id
        except mlflow.exceptions.MlflowException:
            raise ConfigError(
                f"MLFLOW_EXPERIMENT_ID={experiment_id!r} is not an experiment of the tracking server; "
                "unset it or set it to an existing experiment id."
            ) from None
    return "0"


def attach_parent(
    client: MlflowClient,
    *,
    study_name: str,
    stored_parent: str | None,
    experiment_name: str,
) -> ParentRun:
    """Return the parent run of ``study_name``, creating or re-opening it as needed.

    A study that already has a parent keeps it. If this job also runs
    inside another run (``mlflow run`` always creates one), that run is
    tagged as a worker of the study and points to the parent.
    """
    outer = outer_run_id()
    if stored_parent:
        run = client.get_run(stored_parent)
        if outer and outer != stored_parent:
            _tag_worker_run(client, outer, study_name=study_name, parent_run_id=stored_parent)
        reopened = run.info.status != RunStatus.to_string(RunStatus.RUNNING)
        if reopened:
            client.update_run(stored_parent, status="RUNNING")
        return ParentRun(stored_parent, run.info.experiment_id, owned=outer != stored_parent, resumed=True)

    experiment_id = resolve_experiment_id(client, experiment_name, outer)
    if outer:
        client.set_tag(outer, TAG_ROLE, "study")
        client.set_tag(outer, TAG_STUDY, study_name)
        return ParentRun(outer, experiment_id, owned=False)
    run = client.create_run(experiment_id, tags={TAG_RUN_NAME: study_name, TAG_ROLE: "study", TAG_STUDY: study_name})
    return ParentRun(run.info.run_id, experiment_id, owned=True)


def attach_worker(client: MlflowClient, *, study_name: str, parent_run_id: str) -> ParentRun:
    """Return the parent run for a worker process, which neither re-opens nor ends it.

    If the worker runs inside another run (``mlflow run`` always creates
    one), that run is tagged as a worker of the study and points to the
    parent; it holds no trials and ends with the worker.
    """
    run = client.get_run(parent_run_id)
    outer = outer_run_id()
    if outer and outer != parent_run_id:
        _tag_worker_run(client, outer, study_name=study_name, parent_run_id=parent_run_id)
    return ParentRun(parent_run_id, run.info.experiment_id, owned=False, resumed=True)


def _tag_worker_run(client: MlflowClient, run_id: str, *, study_name: str, parent_run_id: str) -> None:
    client.set_tag(run_id, TAG_ROLE, "worker")
    client.set_tag(run_id, TAG_STUDY, study_name)
    client.set_tag(run_id, TAG_PARENT_POINTER, parent_run_id)


def close_parent(client: MlflowClient, parent: ParentRun, *, failed: bool) -> None:
    """End the parent run if this job owns it."""
    if parent.owned:
        client.set_terminated(parent.run_id, status="FAILED" if failed else "FINISHED")
