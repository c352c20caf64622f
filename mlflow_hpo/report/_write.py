"""Write every report artifact of a study into a folder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from mlflow_hpo.report._context import CONTEXT_ATTR, ReportContext, context_from_job
from mlflow_hpo.report._export import write_study_json
from mlflow_hpo.report._importance import compute_importance, importance_metrics
from mlflow_hpo.report._pareto import pareto_frame
from mlflow_hpo.report._plots import write_plots
from mlflow_hpo.report._tables import (
    best_config,
    dumps,
    ranked_trials,
    summary_markdown,
    top_trials_markdown,
    trials_frame,
)

if TYPE_CHECKING:
    from mlflow_hpo.study import Job

_logger = logging.getLogger(__name__)


def write_study_report(study: optuna.Study, job: Job, details: dict[str, Any], folder: Path) -> dict[str, float]:
    """Write the parent run's artifacts of a finished job into ``folder``.

    The report context is also stored as a study user attribute, so
    ``mlflow-hpo report`` can write the same files later from the storage.
    Returns the parent-run metrics that the report adds (importances and,
    with several objectives, the size of the Pareto front).
    """
    ctx = context_from_job(study, job, details)
    try:
        study.set_user_attr(CONTEXT_ATTR, ctx.to_json())
    except Exception as exc:  # noqa: BLE001 - storage backends raise their own types; the files still get written
        _logger.warning("Could not store the report context in study %s: %s", ctx.study_name, exc)
    return write_report(study, ctx, folder)


def write_report(study: optuna.Study, ctx: ReportContext, folder: Path) -> dict[str, float]:
    """Write best_config.json, trials.csv, top_trials.md, summary.md, importance.json,
    study.json, pareto_front.csv (several objectives) and plots/ into ``folder``.

    Returns the parent-run metrics of the report.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "best_config.json").write_text(dumps(best_config(ctx)))

    frame = trials_frame(study, ctx)
    frame.to_csv(folder / "trials.csv", index=False)
    (folder / "top_trials.md").write_text(top_trials_markdown(ranked_trials(frame, ctx), ctx))

    importance = compute_importance(study, ctx)
    (folder / "importance.json").write_text(dumps(importance))
    (folder / "summary.md").write_text(summary_markdown(study, ctx, importance))
    write_study_json(study, folder / "study.json")

    metrics = importance_metrics(importance)
    if ctx.is_multi_objective:
        front = pareto_frame(study, ctx)
        front.to_csv(folder / "pareto_front.csv", index=False)
        metrics["pareto_front_size"] = float(len(front))
    write_plots(study, ctx, importance, folder / "plots")
    return metrics
