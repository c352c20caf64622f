"""Artifacts of a finished study: tables, summary and plots."""

from mlflow_hpo.report._tables import replay_command, trials_frame, write_study_report

__all__ = ["replay_command", "trials_frame", "write_study_report"]
