"""Artifacts of a finished study: tables, importance, plots, Pareto front and export."""

from mlflow_hpo.report._context import ReportContext, context_from_job, context_from_study
from mlflow_hpo.report._export import export_study, import_study, write_study_json
from mlflow_hpo.report._importance import compute_importance, importance_metrics
from mlflow_hpo.report._pareto import log_report_outputs, pareto_frame
from mlflow_hpo.report._regenerate import regenerate_report
from mlflow_hpo.report._tables import replay_command, trials_frame
from mlflow_hpo.report._write import write_report, write_study_report

__all__ = [
    "ReportContext",
    "compute_importance",
    "context_from_job",
    "context_from_study",
    "export_study",
    "import_study",
    "importance_metrics",
    "log_report_outputs",
    "pareto_frame",
    "regenerate_report",
    "replay_command",
    "trials_frame",
    "write_report",
    "write_study_json",
    "write_study_report",
]
