"""Worker processes: join a study by name and run its trials under the one parent run.

A study stores its `TuneConfig` in a user attribute when it is created, so
``mlflow-hpo worker --study_name NAME`` needs only the name and the same
environment (``MLFLOW_TRACKING_URI``, ``MLFLOW_HPO_STORAGE``) as the job
that created it. Workers share the trial budget with every other process
of the study, mirror their trials as child runs of the study's parent run,
and neither re-open nor end that run: the ``tune`` process owns it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import optuna
from mlflow.tracking import MlflowClient

from mlflow_hpo._errors import ConfigError
from mlflow_hpo.config import TuneConfig
from mlflow_hpo.storage import (
    STORAGE_ENV,
    open_storage,
    redact_url,
    storage_url,
    study_exists,
    study_lock,
)

if TYPE_CHECKING:
    from mlflow_hpo.study import Job, TuneResult

_logger = logging.getLogger(__name__)

# Study user attribute with the configuration the study was created with.
CONFIG_ATTR = "mlflow_hpo_config"
# Study user attribute with the last TuneResult and the finished-trial count it covers.
RESULT_ATTR = "mlflow_hpo_result"
# Fields whose relative paths are made absolute in the stored configuration,
# so a worker started in another folder finds the same files.
_PATH_FIELDS = ("data", "space")


def stored_config(config: TuneConfig) -> dict[str, Any]:
    """Return ``config`` as a JSON-ready mapping for the study's user attributes."""
    values = {field.name: getattr(config, field.name) for field in dataclasses.fields(config)}
    for name in _PATH_FIELDS:
        value = values.get(name)
        if isinstance(value, str) and value and Path(value).exists():
            values[name] = str(Path(value).resolve())
    if values.get("space_spec") is not None:
        values["space_spec"] = dict(values["space_spec"])
    # The worker processes that read this configuration never start workers.
    values["workers"] = 1
    return values


def config_from_stored(values: Mapping[str, Any]) -> TuneConfig:
    """Rebuild a `TuneConfig` from ``stored_config`` output, ignoring unknown fields."""
    names = {field.name for field in dataclasses.fields(TuneConfig)}
    return TuneConfig(**{key: value for key, value in values.items() if key in names})


def join_study(study_name: str) -> int:
    """Run trials of the stored study ``study_name`` until its budget is used.

    Returns:
        The number of trials this worker ran.

    Raises:
        ConfigError: When the storage contains no such study, or the study
            was not created by mlflow_hpo (it has no stored configuration).
    """
    from mlflow_hpo.runs import PARENT_ATTR, attach_worker
    from mlflow_hpo.study import (
        _create_or_load_study,
        _reconcile,
        make_trial_loop,
        open_mirror,
        plan,
    )
    from mlflow_hpo.trial_loop import HeartbeatFailures

    url = storage_url(mlflow.get_tracking_uri())
    heartbeat_failures = HeartbeatFailures()
    storage = open_storage(url, failed_trial_callback=heartbeat_failures)
    if not study_name or not study_exists(storage, study_name):
        raise ConfigError(
            f"study_name={study_name!r} is not a study in storage {redact_url(url)!r}; start it with "
            f"`mlflow-hpo tune --study_name {study_name or 'NAME'}` or set {STORAGE_ENV} to the storage that holds it."
        )
    attrs = optuna.load_study(study_name=study_name, storage=storage).user_attrs
    if CONFIG_ATTR not in attrs or PARENT_ATTR not in attrs:
        raise ConfigError(
            f"study {study_name!r} in {redact_url(url)!r} has no stored mlflow_hpo configuration; "
            "workers can join only studies that `mlflow-hpo tune` created."
        )

    job = plan(config_from_stored(attrs[CONFIG_ATTR]))
    # Workers seeded alike would propose the same parameters; each draws its own.
    job.strategy.sampler.reseed_rng()
    study = _create_or_load_study(job, storage)
    client = MlflowClient()
    parent = attach_worker(client, study_name=study_name, parent_run_id=attrs[PARENT_ATTR])
    mirror = open_mirror(client, job, parent)
    try:
        loop = make_trial_loop(study, job, mirror, heartbeat_failures)
        n_run = loop.run()
        _reconcile(study, job, mirror)
    finally:
        mirror.close()
    _logger.info("Worker ran %d trials of study %s (parent run %s).", n_run, study_name, parent.run_id)
    return n_run


def worker_command(study_name: str) -> list[str]:
    """Return the command line that starts one worker of ``study_name``."""
    return [sys.executable, "-m", "mlflow_hpo", "worker", "--study_name", study_name]


def finalize_once(study: optuna.Study, job: Job, run_finalize: Callable[[], TuneResult]) -> TuneResult:
    """Finalize the study unless another process already did so after its last trial.

    Several ``tune`` processes on one study all reach this point. The first
    one refits, reports and registers the winner. The others return its
    stored result, so the same winner is not registered twice.
    """
    from mlflow_hpo.study import TuneResult
    from mlflow_hpo.trial_loop import autologging_paused

    with study_lock(job.storage_url, job.study_name, "finalize"):
        finished = len([t for t in study.get_trials(deepcopy=False) if t.state.is_finished()])
        stored = study.user_attrs.get(RESULT_ATTR)
        if stored and stored.get("n_finished") == finished:
            _logger.info("Study %s was finalized after its last trial already; returning that result.", job.study_name)
            names = {field.name for field in dataclasses.fields(TuneResult)}
            return TuneResult(**{key: value for key, value in stored.items() if key in names})
        with autologging_paused():
            result = run_finalize()
        plain = json.loads(json.dumps(dataclasses.asdict(result), default=_plain_value))
        study.set_user_attr(RESULT_ATTR, {"n_finished": finished, **plain})
        return result


def _plain_value(value: Any) -> Any:
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)


def run_local_workers(job: Job, count: int) -> None:
    """Start ``count`` worker processes on this machine for ``job``'s study and wait for them.

    A worker that exits with an error is logged, and the other workers go
    on. The next check for dead processes fails its running trials.
    """
    env = dict(os.environ)
    env["MLFLOW_TRACKING_URI"] = mlflow.get_tracking_uri()
    env[STORAGE_ENV] = job.storage_url
    # The workers' trials belong to the study's parent run, not to a run
    # that `mlflow run` opened for this process.
    env.pop("MLFLOW_RUN_ID", None)
    _logger.info("Starting %d worker processes for study %s.", count, job.study_name)
    processes = [subprocess.Popen(worker_command(job.study_name), env=env) for _ in range(count)]
    for number, process in enumerate(processes):
        status = process.wait()
        if status != 0:
            _logger.warning("Worker %d (pid %d) exited with status %d.", number, process.pid, status)
