"""Report tables: best config, trial table, top trials and summary."""

from __future__ import annotations

import json
import math
import shlex
from typing import Any

import numpy as np
import optuna
import pandas as pd

from mlflow_hpo.cv import cv_attr
from mlflow_hpo.multi_objective import BUILTIN_METRIC, pareto_ranks
from mlflow_hpo.report._context import ReportContext

TOP_TRIALS = 20
# Options that `mlflow run` cannot take or that must not be replayed as given.
_NOT_REPLAYED = ("experiment_name", "study_name", "n_trials", "timeout", "register_model")


def replay_command(ctx: ReportContext, trial_number: int | None = None) -> str:
    """Return the ``mlflow run`` command that runs trial ``trial_number`` of this study again.

    With the same data, seed and options, a sequential study proposes the
    same trials in the same order, so the first ``trial_number + 1`` trials
    of a new study end with the same configuration. A replay registers no
    model, so checking a result never adds a version or moves ``champion``.
    """
    parts = ["mlflow", "run", ".", "--env-manager", "local"]
    for key, value in ctx.config.items():
        if key in _NOT_REPLAYED or value == "":
            continue
        parts += ["-P", f"{key}={value}"]
    if trial_number is not None:
        parts += ["-P", f"n_trials={trial_number + 1}"]
    parts += ["-P", f"study_name={ctx.study_name}-replay", "-P", "register_model="]
    return shlex.join(parts)


def trials_frame(study: optuna.Study, ctx: ReportContext) -> pd.DataFrame:
    """Return one row per trial: number, state, values, CV std, duration, pruning step, params."""
    rows = []
    names = list(ctx.param_names)
    for trial in study.get_trials(deepcopy=False):
        names += [name for name in trial.params if name not in names]
    for trial in study.get_trials(deepcopy=False):
        row: dict[str, Any] = {"number": trial.number, "state": trial.state.name}
        for index in range(len(ctx.objectives)):
            row[ctx.value_column(index)] = trial.values[index] if trial.values else None
        row["cv_std"] = cv_attr(trial, "std")
        row["duration_s"] = cv_attr(trial, "duration_s")
        row["pruned_at_step"] = trial.last_step if trial.state == optuna.trial.TrialState.PRUNED else None
        row["fail_reason"] = trial.user_attrs.get("fail_reason")
        for name in names:
            row[f"param_{name}"] = trial.params.get(name)
        rows.append(row)
    return pd.DataFrame(rows)


def ranked_trials(frame: pd.DataFrame, ctx: ReportContext) -> pd.DataFrame:
    """Return completed trials, best first: by value, or by Pareto rank then the first objective."""
    columns = [ctx.value_column(i) for i in range(len(ctx.objectives))]
    complete = frame[(frame["state"] == "COMPLETE") & frame[columns].notna().all(axis=1)].copy()
    first_ascending = ctx.directions[0] == "minimize"
    if not ctx.is_multi_objective:
        return complete.sort_values(columns[0], ascending=first_ascending, kind="stable")
    values = complete[columns].to_numpy(dtype=float)
    complete.insert(2, "pareto_rank", pareto_ranks(values, ctx.directions) if len(values) else [])
    return complete.sort_values(["pareto_rank", columns[0]], ascending=[True, first_ascending], kind="stable")


def best_config(ctx: ReportContext) -> dict[str, Any]:
    """Return the content of best_config.json."""
    details = ctx.details
    trial_number = details.get("best_trial")
    config: dict[str, Any] = {
        "study_name": ctx.study_name,
        "model": ctx.config.get("model", ""),
        "metric": ctx.objectives[0],
        "objectives": dict(zip(ctx.objectives, ctx.directions, strict=True)),
        "trial_number": trial_number,
        "params": details.get("params"),
        "model_kwargs": details.get("model_kwargs"),
        "cv": {
            "scheme": details.get("cv_scheme"),
            "n_splits": details.get("n_splits"),
            "mean": details.get("cv_mean"),
            "std": details.get("cv_std"),
            "fold_scores": details.get("cv_scores"),
        },
        "objective_values": details.get("objective_values"),
        "test_score": details.get("test_score"),
        "refit_n_estimators": details.get("refit_n_estimators"),
        "refit_rule": details.get("refit_rule"),
        "fold_best_iterations": details.get("fold_best_iterations"),
        "nested_cv": details.get("nested"),
        "selection": details.get("selection"),
        "seed": ctx.config.get("seed"),
        "replay_command": replay_command(ctx, trial_number),
    }
    return config


def top_trials_markdown(ranked: pd.DataFrame, ctx: ReportContext) -> str:
    """Return top_trials.md: the best ``TOP_TRIALS`` completed trials as a ranked table."""
    top = ranked.head(TOP_TRIALS)
    values = [ctx.value_column(i) for i in range(len(ctx.objectives))]
    extra = ["pareto_rank"] if ctx.is_multi_objective else []
    params = [c for c in ranked.columns if c.startswith("param_")]
    columns = ["number", *extra, *values, "cv_std", "duration_s", *params]
    order = "Pareto rank, then " if ctx.is_multi_objective else ""
    lines = [
        f"# Top {len(top)} trials of {ctx.study_name}",
        "",
        f"Ranked by {order}{ctx.objectives[0]} ({ctx.directions[0]}d); only completed trials.",
        "",
        "| rank | " + " | ".join(columns) + " |",
        "|" + " --- |" * (len(columns) + 1),
    ]
    for rank, (_, row) in enumerate(top.iterrows(), start=1):
        lines.append(f"| {rank} | " + " | ".join(_cell(row[c]) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def summary_markdown(study: optuna.Study, ctx: ReportContext, importance: dict[str, Any]) -> str:
    """Return summary.md: how the study ran and how good its winner is."""
    trials = study.get_trials(deepcopy=False)
    details = ctx.details
    counts = details.get("counts") or _state_counts(trials)
    objectives = ", ".join(f"{n} ({d}d)" for n, d in zip(ctx.objectives, ctx.directions, strict=True))

    lines = [
        f"# Study {ctx.study_name}",
        "",
        *([f"- Data: {ctx.data}"] if ctx.data else []),
        f"- Model: {ctx.config.get('model', 'unknown')}; objectives: {objectives}",
        f"- Strategy: {ctx.strategy}" + (f" ({ctx.strategy_reason})" if ctx.strategy_reason else ""),
        f"- Sampler: {ctx.sampler}, seed {ctx.seed}",
        f"- Pruner: {ctx.pruner}",
    ]

    if details.get("cv_scheme"):
        lines.append(f"- Cross-validation: {details['cv_scheme']}, {details.get('n_splits')} splits")
    if ctx.storage:
        lines.append(f"- Storage: `{ctx.storage}`")
    lines += [
        f"- Trials by state: {', '.join(f'{state}: {n}' for state, n in sorted(counts.items()))}",
        f"- Wall time: {_wall_time(details, trials)}",
        f"- Importance: {_importance_line(importance)}",
    ]
    if ctx.is_multi_objective:
        lines.append(
            f"- Pareto front: {len(study.best_trials)} trials (pareto_front.csv; their child runs carry "
            "the tag mlflow_hpo.pareto=true)"
        )
    for name in ctx.objectives[1:]:
        if ctx.objective_method(name):
            lines.append(f"- {name}: {ctx.objective_method(name)}")

    lines += ["", *_scores_section(ctx)]
    if details.get("registry"):
        lines += ["", *details["registry"]]
    return "\n".join(lines) + "\n"


def _scores_section(ctx: ReportContext) -> list[str]:
    details = ctx.details
    name = ctx.objectives[0]
    if details.get("cv_mean") is None:
        return ["No final model was refit for this study, so there is no held-out score."]

    lines = ["## Scores of the winner", ""]
    if details.get("selection"):
        lines += [f"Selection: {details['selection']}", ""]
    lines += [
        "| estimate | value |",
        "| --- | --- |",
        f"| trial | {details.get('best_trial')} |",
        f"| CV {name} of the winner (mean over folds) | {_cell(details['cv_mean'])} |",
        f"| CV {name} of the winner (std over folds) | {_cell(details.get('cv_std'))} |",
    ]
    for objective, value in (details.get("objective_values") or {}).items():
        if objective != name:
            lines.append(f"| {BUILTIN_METRIC.get(objective, objective)} of the winner | {_cell(value)} |")

    test = details.get("test_score")
    if test is not None:
        lines += [
            f"| held-out test {name} (refit winner, used once) | {_cell(test)} |",
            f"| CV minus held-out | {_cell(details['cv_mean'] - test)} |",
        ]

    nested = details.get("nested")
    if nested:
        lines += [
            f"| nested CV {name}, outer-fold mean (estimate of production performance) "
            f"| {_cell(nested['outer_mean'])} |",
            f"| nested CV {name}, outer-fold std | {_cell(nested['outer_std'])} |",
            f"| nested CV {name}, inner best (mean over outer folds) | {_cell(nested['inner_best_mean'])} |",
        ]
    lines += [
        "",
        "The winner's CV score is optimistic: it is the best of many trials on the same folds.",
        "The held-out score of the refit winner is the unbiased estimate.",
    ]
    if nested:
        lines.append(
            f"Nested CV ran the whole search again inside each of {len(nested['folds'])} outer folds "
            f"({nested['scheme']}); its outer-fold scores estimate the tuning procedure on new data."
        )
    if details.get("refit_rule"):
        rounds = details.get("refit_n_estimators")
        lines += ["", f"Refit: {details['refit_rule']}" + (f" -> {rounds} rounds." if rounds else ".")]
    return lines


def _importance_line(importance: dict[str, Any]) -> str:
    if importance.get("skipped"):
        return f"skipped ({importance['skipped']})"
    ranked = list(importance.get("importances", {}).items())[:3]
    top = ", ".join(f"{name} {value:.2f}" for name, value in ranked)
    return f"{importance.get('evaluator')}; top: {top} (see importance.json)"


def _state_counts(trials: list[optuna.trial.FrozenTrial]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in trials:
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


def _wall_time(details: dict[str, Any], trials: list[optuna.trial.FrozenTrial]) -> str:
    if details.get("wall_time_s") is not None:
        return f"{details['wall_time_s']:.1f} s"
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    if not starts or not ends:
        return "unknown"
    return f"{(max(ends) - min(starts)).total_seconds():.1f} s (first trial start to last trial end)"


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{value:.6g}"
    return str(value)


def dumps(content: Any) -> str:
    """Return ``content`` as indented JSON text with a final newline."""
    return json.dumps(content, indent=2, default=str) + "\n"
