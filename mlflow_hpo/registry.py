"""Logging the winner as an MLflow model and registering it."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature

from mlflow_hpo import __version__
from mlflow_hpo._errors import HpoError
from mlflow_hpo.runs import ParentRun
from mlflow_hpo.serving import TunedModel

if TYPE_CHECKING:
    from mlflow_hpo.study import Job

_logger = logging.getLogger(__name__)
INPUT_EXAMPLE_ROWS = 5
MODEL_ARTIFACT = "model"
_PACKAGE_DIR = str(Path(__file__).resolve().parent)


class RegistrationError(HpoError):
    """The model failed a check that gates registration."""


def registered_name(job: Job) -> str:
    """Return the registered model name: the configured one, or ``<dataset>-<model>``."""
    name = job.config.register_model
    if name == "auto":
        name = re.sub(r"[^\w\-.]", "_", f"{job.dataset.name}-{job.config.model}")
    return name


def input_example(job: Job) -> pd.DataFrame:
    """Return training rows as a JSON request would carry them (the signature's input)."""
    rows = job.dataset.raw_train.head(INPUT_EXAMPLE_ROWS)
    return job.dataset.preprocessor.serving_frame(rows)


def log_and_register(model: TunedModel, job: Job, parent: ParentRun, trial_number: int) -> tuple[str, str, str | None]:
    """Log ``model`` on the parent run, smoke-test it, and register it.

    Returns the model URI, the registered name ("" when registration is
    off) and the new version (None when registration is off).
    """
    example = input_example(job)
    predictions = model.predict(example)
    signature = infer_signature(example, _signature_output(predictions))
    if signature.inputs is None:
        raise RegistrationError("could not infer a model signature from the input example; the model is not registered.")

    active = mlflow.active_run()
    started_here = active is None or active.info.run_id != parent.run_id
    if started_here:
        mlflow.start_run(run_id=parent.run_id, nested=active is not None)
    try:
        info = mlflow.sklearn.log_model(
            model,
            name=MODEL_ARTIFACT,
            signature=signature,
            input_example=example,
            code_paths=[_PACKAGE_DIR],
            serialization_format="cloudpickle",
        )
    finally:
        if started_here:
            # Leave the parent's status to its owner; only pop it off the fluent stack.
            mlflow.end_run(status="RUNNING")

    smoke_test(info.model_uri, example, predictions)
    name = registered_name(job)
    if not name:
        return info.model_uri, "", None
    version = mlflow.register_model(
        info.model_uri,
        name,
        tags={
            "mlflow_hpo.study_name": job.study_name,
            "mlflow_hpo.parent_run_id": parent.run_id,
            "mlflow_hpo.trial_number": str(trial_number),
            "mlflow_hpo.dataset_digest": job.dataset.digest,
            "mlflow_hpo.version": __version__,
        },
    )
    _logger.info("Registered %s version %s from %s.", name, version.version, info.model_uri)
    return info.model_uri, name, str(version.version)


def smoke_test(model_uri: str, example: pd.DataFrame, expected: np.ndarray) -> None:
    """Load ``model_uri`` through pyfunc and check it predicts ``expected`` on ``example``."""
    loaded = mlflow.pyfunc.load_model(model_uri)
    try:
        served = np.asarray(loaded.predict(example))
    except Exception as exc:  # pyfunc wraps schema and model errors in several types
        raise RegistrationError(
            f"the logged model failed to predict on its own input example ({exc}); it is not registered."
        ) from exc
    if served.shape != np.asarray(expected).shape or not _same(served, np.asarray(expected)):
        raise RegistrationError(
            "the logged model predicts differently after loading than before; it is not registered."
        )


def _same(left: np.ndarray, right: np.ndarray) -> bool:
    if left.dtype.kind in "fc" and right.dtype.kind in "fc":
        return bool(np.allclose(left, right, equal_nan=True))
    return bool(np.array_equal(left.astype(str), right.astype(str)))


def _signature_output(predictions: np.ndarray) -> np.ndarray:
    if predictions.dtype.kind in "OUS":
        return predictions.astype(str)
    return predictions
