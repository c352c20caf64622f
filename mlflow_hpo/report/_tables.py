"""Study report files: best config, trial table, summary and plots."""

from __future__ import annotations

import json
import logging
import math
import shlex
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
import pandas as pd

from mlflow_hpo.storage import redact_url

if TYPE_CHECKING:
    from mlflow_hpo.study import Job

_logger = logging.getLogger(__name__)
TOP_TRIALS = 20


def replay_command(job: Job) -> str:
    """Return the ``mlflow run`` command that runs this study's configuration again."""
    params = job.config.to_params()
    params["study_name"] = job.study_name + "-replay"
    parts = ["mlflow", "run", ".", "--env-manager", "local"]
    for key, value in params.items():
        if key in ("experiment_name",) or value == "":
            continue
        parts += ["-P", f"{key}={value}"]
    return shlex.join(parts)


def trials_frame(study: optuna.Study, job: Job) -> pd.DataFrame:
    """Return one row per trial: number, state, params, value, CV std, duration, pruning step."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": trial.number, "state": trial.state.name, "value": trial.value}
        row["cv_std"] = trial.user_attrs.get("cv_std")
        row["duration_s"] = trial.user_attrs.get("duration_s")
        row["pruned_at_step"] = trial.last_step if trial.state == optuna.trial.TrialState.PRUNED else None
        row["fail_reason"] = trial.user_attrs.get("fail_reason")
        for name in job.space.names:
            row[f"param_{name}"] = trial.params.get(name)
        rows.append(row)
    return pd.DataFrame(rows)


def write_study_report(study: optuna.Study, job: Job, details: dict[str, Any], folder: Path) -> None:
    """Write the parent run's artifacts into ``folder``."""
    best_config = {
        "study_name": job.study_name,
        "model": job.config.model,
        "metric": job.objective.name,
        "params": details["params"],
        "model_kwargs": _jsonable(details["model_kwargs"]),
        "cv": {
            "scheme": details["cv_scheme"],
            "n_splits": details["n_splits"],
            "mean": details["cv_mean"],
            "std": details["cv_std"],
            "fold_scores": details["cv_scores"],
        },
        "test_score": details["test_score"],
        "refit_n_estimators": details["refit_n_estimators"],
        "refit_rule": details["refit_rule"],
        "fold_best_iterations": details["fold_best_iterations"],
        "seed": job.config.seed,
        "replay_command": replay_command(job),
    }
    (folder / "best_config.json").write_text(json.dumps(best_config, indent=2, default=str) + "\n")

    frame = trials_frame(study, job)
    frame.to_csv(folder / "trials.csv", index=False)
    (folder / "top_trials.md").write_text(_top_trials_markdown(frame))
    (folder / "summary.md").write_text(_summary_markdown(study, job, details))
    _write_plots(study, folder / "plots")


def _top_trials_markdown(frame: pd.DataFrame) -> str:
    complete = frame[frame["state"] == "COMPLETE"].sort_values("value", ascending=False).head(TOP_TRIALS)
    columns = ["number", "value", "cv_std", "duration_s"] + [c for c in frame.columns if c.startswith("param_")]
    lines = [f"# Top {len(complete)} trials", "", "| rank | " + " | ".join(columns) + " |"]
    lines.append("|" + " --- |" * (len(columns) + 1))
    for rank, (_, row) in enumerate(complete.iterrows(), start=1):
        cells = [_cell(row[c]) for c in columns]
        lines.append(f"| {rank} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _summary_markdown(study: optuna.Study, job: Job, details: dict[str, Any]) -> str:
    name = job.objective.name
    gap = details["cv_mean"] - details["test_score"]
    counts = ", ".join(f"{state}: {n}" for state, n in sorted(details["counts"].items()))
    lines = [
        f"# Study {job.study_name}",
        "",
        f"- Data: `{job.config.data}` ({job.dataset.task}, {len(job.dataset.X_train)} training rows, "
        f"{len(job.dataset.X_test)} held-out rows, digest {job.dataset.digest})",
        f"- Model: {job.config.model}; metric: {name} (maximized)",
        f"- Strategy: {job.strategy.name} ({job.strategy.reason})",
        f"- Sampler: {type(study.sampler).__name__}, seed {job.config.seed}",
        f"- Pruner: {type(study.pruner).__name__}",
        f"- Cross-validation: {details['cv_scheme']}, {details['n_splits']} splits",
        f"- Storage: `{redact_url(job.storage_url)}`",
        f"- Trials by state: {counts}",
        f"- Wall time: {details['wall_time_s']:.1f} s",
        "",
        "## Scores of the winner",
        "",
        "| estimate | value |",
        "| --- | --- |",
        f"| best CV {name} (mean over folds) | {details['cv_mean']:.6g} |",
        f"| best CV {name} (std over folds) | {details['cv_std']:.3g} |",
        f"| held-out test {name} (refit winner, used once) | {details['test_score']:.6g} |",
        f"| CV minus held-out | {gap:.3g} |",
        "",
        "The best CV score is optimistic: it is the maximum over many trials.",
        "The held-out score is the unbiased estimate of the refit winner.",
        "",
        f"Refit: {details['refit_rule']}"
        + (f" -> {details['refit_n_estimators']} rounds." if details["refit_n_estimators"] else "."),
        "",
    ]
    return "\n".join(lines)


def _write_plots(study: optuna.Study, folder: Path) -> None:
    """Write the optimization history as PNG and HTML; a plot failure never fails the study."""
    folder.mkdir(parents=True, exist_ok=True)
    completed = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        return
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as optuna_matplotlib
        from optuna.visualization import plot_optimization_history

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            axes = optuna_matplotlib.plot_optimization_history(study)
        plot_optimization_history(study).write_html(folder / "optimization_history.html", include_plotlyjs=True)
        figure = axes.get_figure(root=True)
        assert figure is not None
        figure.savefig(folder / "optimization_history.png", dpi=100, bbox_inches="tight")
        plt.close(figure)
    except (ImportError, ValueError, RuntimeError) as exc:
        _logger.warning("Skipping the optimization history plot: %s", exc)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, (str, int, float, bool)) or v is None else str(v)) for k, v in values.items()}
