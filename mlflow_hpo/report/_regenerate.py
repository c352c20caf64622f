"""``mlflow-hpo report``: rebuild every artifact of a stored study into a run or a folder."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import mlflow
import optuna
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlflow_hpo._errors import ConfigError
from mlflow_hpo.report._context import context_from_study
from mlflow_hpo.report._pareto import log_report_outputs
from mlflow_hpo.report._write import write_report
from mlflow_hpo.storage import STORAGE_ENV, open_storage, redact_url, storage_url, study_exists

_logger = logging.getLogger(__name__)


def regenerate_report(study_name: str, *, run_id: str = "", output: str = "") -> str:
    """Write the report of ``study_name`` from its Optuna storage into run ``run_id`` or folder ``output``.

    The storage is ``MLFLOW_HPO_STORAGE`` or the journal file beside the
    MLflow store. Only reads the study. With ``run_id``, the artifacts,
    importance metrics and Pareto tags of child runs go to that run.
    Returns where the report went.

    Raises:
        ConfigError: if both or neither of ``run_id`` and ``output`` are
            given, the study does not exist, or the run does not exist.
    """
    if bool(run_id) == bool(output):
        raise ConfigError("report needs exactly one destination; pass --run-id RUN or --output FOLDER.")
    url = storage_url(mlflow.get_tracking_uri())
    storage = open_storage(url)
    if not study_exists(storage, study_name):
        names = optuna.study.get_all_study_names(storage)
        known = ", ".join(names[:10]) or "none"
        raise ConfigError(
            f"study {study_name!r} not found in storage {redact_url(url)!r} (studies: {known}); "
            f"check --study-name or set {STORAGE_ENV}."
        )
    study = optuna.load_study(study_name=study_name, storage=storage)
    ctx = context_from_study(study, url)
    if output:
        folder = Path(output)
        write_report(study, ctx, folder)
        _logger.info("Wrote the report of study %s to %s.", study_name, folder)
        return str(folder)

    client = MlflowClient()
    try:
        client.get_run(run_id)
    except MlflowException:
        raise ConfigError(
            f"run {run_id!r} not found on tracking server {mlflow.get_tracking_uri()!r}; "
            "pass the id of an existing run."
        ) from None
    with tempfile.TemporaryDirectory() as temporary:
        metrics = write_report(study, ctx, Path(temporary))
        client.log_artifacts(run_id, temporary)
    log_report_outputs(client, run_id, study, metrics)
    _logger.info("Logged the report of study %s to run %s.", study_name, run_id)
    return f"run {run_id}"
