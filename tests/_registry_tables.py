"""Small mixed-type tables and fitted models for the registry, serving and promotion tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from sklearn.dummy import DummyClassifier

from mlflow_hpo.config import TuneConfig
from mlflow_hpo.data import frame_digest
from mlflow_hpo.promotion import HeldOut
from mlflow_hpo.registry import Registration, decoded_labels, log_and_register
from mlflow_hpo.runs import ParentRun, attach_parent
from mlflow_hpo.serving import TunedModel
from mlflow_hpo.study import Job, plan


def mixed_frame(n_rows: int = 240, seed: int = 0) -> pd.DataFrame:
    """Return a binary table with a text column, nullable Int64 and boolean columns with missing values."""
    rng = np.random.default_rng(seed)
    color = rng.choice(["red", "green", "blue"], n_rows)
    count = rng.integers(0, 5, n_rows)
    flag = rng.random(n_rows) < 0.5
    x = rng.normal(size=n_rows)
    signal = x + 0.8 * (color == "red") + 0.3 * count - 0.5 * flag + rng.normal(scale=1.0, size=n_rows)
    return pd.DataFrame(
        {
            "x": x,
            "color": pd.Series(color, dtype="str"),
            "count": pd.array(np.where(rng.random(n_rows) < 0.2, None, count), dtype="Int64"),
            "flag": pd.array(np.where(rng.random(n_rows) < 0.2, None, flag), dtype="boolean"),
            "k": rng.integers(0, 10, n_rows),
            "y": np.where(signal > np.median(signal), "yes", "no"),
        }
    )


def write_table(folder: Path, frame: pd.DataFrame | None = None, name: str = "table.parquet") -> Path:
    path = folder / name
    (mixed_frame() if frame is None else frame).to_parquet(path)
    return path


def plan_job(folder: Path, frame: pd.DataFrame | None = None, **options: Any) -> Job:
    """Plan a job on a Parquet copy of ``frame`` without running any trial."""
    path = write_table(folder, frame)
    values = {"data": str(path), "target": "y", "model": "lightgbm", "n_trials": 1, "register_model": "mixed", **options}
    return plan(TuneConfig(**values))


def fit_model(job: Job, *, weak: bool = False) -> TunedModel:
    """Fit a LightGBM winner, or a class-prior baseline (ROC AUC 0.5) when ``weak``."""
    if weak:
        estimator = DummyClassifier(strategy="prior").fit(job.dataset.X_train, job.dataset.y_train)
    else:
        estimator = job.adapter.fit_final({}, job.context, job.dataset.X_train, job.dataset.y_train, 40)
    return TunedModel(job.dataset.preprocessor, estimator, job.dataset.classes)


def new_parent(job: Job) -> ParentRun:
    return attach_parent(mlflow.MlflowClient(), study_name=job.study_name, stored_parent=None, experiment_name="")


def register(job: Job, *, weak: bool = False, parent: ParentRun | None = None, trial: int = 0) -> Registration:
    """Fit a model on ``job`` and run the whole registry flow for it."""
    return log_and_register(fit_model(job, weak=weak), job, parent or new_parent(job), trial)


def held_out_of(job: Job) -> HeldOut:
    """Return the job's held-out rows as the champion gate scores them."""
    return HeldOut(
        X=job.dataset.raw_test,
        y=decoded_labels(job.dataset.y_test, job.dataset.classes),
        objective=job.objective,
        digest=frame_digest(job.dataset.raw_test),
    )
