"""The Pareto front of a multi-objective study as a table, and the parent run's extra outputs."""

from __future__ import annotations

import logging
import time

import optuna
import pandas as pd
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from mlflow_hpo.cv import cv_attr
from mlflow_hpo.multi_objective import tag_pareto_children
from mlflow_hpo.report._context import ReportContext

_logger = logging.getLogger(__name__)


def pareto_frame(study: optuna.Study, ctx: ReportContext) -> pd.DataFrame:
    """Return pareto_front.csv: one row per Pareto-optimal trial, the selected one marked."""
    selected = ctx.details.get("best_trial")
    rows = []
    for trial in sorted(study.best_trials, key=lambda t: t.number):
        row: dict[str, object] = {"number": trial.number, "selected": trial.number == selected}
        for index in range(len(ctx.objectives)):
            row[ctx.value_column(index)] = trial.values[index]
        row["cv_std"] = cv_attr(trial, "std")
        for name, value in trial.params.items():
            row[f"param_{name}"] = value
        rows.append(row)
    return pd.DataFrame(rows)


def log_report_outputs(client: MlflowClient, run_id: str, study: optuna.Study, metrics: dict[str, float]) -> None:
    """Log the report's metrics on ``run_id`` and tag its Pareto-optimal child runs."""
    now_ms = int(time.time() * 1000)
    if metrics:
        client.log_batch(run_id, metrics=[Metric(k, float(v), now_ms, 0) for k, v in metrics.items()])
    tagged = tag_pareto_children(client, run_id, study)
    if tagged:
        _logger.info("Tagged %d Pareto-optimal child runs of %s.", tagged, run_id)
