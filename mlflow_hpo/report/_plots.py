"""Report plots: static PNG through matplotlib, interactive HTML through plotly.

Each HTML file embeds plotly.js, so it renders in the MLflow artifact viewer
without network access. A plot that fails is logged and skipped; it never
fails the study.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.visualization import (
    plot_optimization_history,
    plot_parallel_coordinate,
    plot_pareto_front,
    plot_slice,
)

from mlflow_hpo.multi_objective import completed_trials
from mlflow_hpo.report._context import ReportContext

_logger = logging.getLogger(__name__)

SLICE_PARAMS = 4
PARALLEL_PARAMS = 8
_DPI = 100


def write_plots(study: optuna.Study, ctx: ReportContext, importance: dict[str, Any], folder: Path) -> list[str]:
    """Write every plot that the study supports into ``folder``; return the file names written."""
    folder.mkdir(parents=True, exist_ok=True)
    if not completed_trials(study):
        _logger.info("No completed trial, so the report has no plots.")
        return []

    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as optuna_matplotlib

    target, target_name = _first_objective(ctx)
    ranked = list(importance.get("importances", {}))
    params = [p for p in ranked if p in _sampled_params(study)] or _sampled_params(study)
    written: list[str] = []

    def both(name: str, static: Callable[[], Any], interactive: Callable[[], Any] | None) -> None:
        written.extend(_save(folder, name, static, interactive))

    both(
        "optimization_history",
        lambda: optuna_matplotlib.plot_optimization_history(study, target=target, target_name=target_name),
        lambda: plot_optimization_history(study, target=target, target_name=target_name),
    )
    if importance.get("importances"):
        written.extend(_save(folder, "importance", lambda: _importance_axes(importance), None))
    if params:
        top = params[:PARALLEL_PARAMS]
        both(
            "parallel_coordinate",
            lambda: optuna_matplotlib.plot_parallel_coordinate(study, params=top, target=target, target_name=target_name),
            lambda: plot_parallel_coordinate(study, params=top, target=target, target_name=target_name),
        )
        sliced = params[:SLICE_PARAMS]
        both(
            "slice",
            lambda: optuna_matplotlib.plot_slice(study, params=sliced, target=target, target_name=target_name),
            lambda: plot_slice(study, params=sliced, target=target, target_name=target_name),
        )
    labels = [ctx.value_column(i).removeprefix("value_") for i in range(len(ctx.objectives))]
    if ctx.is_multi_objective and len(ctx.objectives) <= 3:
        both(
            "pareto_front",
            lambda: optuna_matplotlib.plot_pareto_front(study, target_names=labels),
            lambda: plot_pareto_front(study, target_names=labels),
        )
    elif ctx.is_multi_objective:
        _logger.info("Pareto front plots show 2 or 3 objectives; this study has %d.", len(ctx.objectives))
    return written


def _first_objective(ctx: ReportContext) -> tuple[Callable[[optuna.trial.FrozenTrial], float] | None, str]:
    if not ctx.is_multi_objective:
        return None, ctx.objectives[0]
    return (lambda trial: trial.values[0]), ctx.objectives[0]


def _sampled_params(study: optuna.Study) -> list[str]:
    names: list[str] = []
    for trial in completed_trials(study):
        names += [name for name in trial.params if name not in names]
    return names


def _importance_axes(importance: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    values = importance["importances"]
    names = list(values)[::-1]
    figure, axes = plt.subplots(figsize=(7, 0.4 * len(names) + 1.5))
    axes.barh(names, [values[n] for n in names], color="#4C72B0")
    axes.set_xlabel("normalized importance")
    axes.set_title(f"Hyperparameter importance ({importance['evaluator']})\ntarget: {importance['target']}")
    return axes


def _save(folder: Path, name: str, static: Callable[[], Any], interactive: Callable[[], Any] | None) -> list[str]:
    import matplotlib.pyplot as plt

    written: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # matplotlib plots are experimental in Optuna
            axes = static()
        axes_list = axes.ravel() if hasattr(axes, "ravel") else [axes]
        figure = axes_list[0].get_figure(root=True)
        figure.savefig(folder / f"{name}.png", dpi=_DPI, bbox_inches="tight")
        plt.close(figure)
        written.append(f"{name}.png")
        if interactive is not None:
            interactive().write_html(folder / f"{name}.html", include_plotlyjs=True)
            written.append(f"{name}.html")
    except Exception as exc:  # noqa: BLE001 - a plot must never fail the study
        _logger.warning("Skipping the %s plot: %s", name, exc, exc_info=True)
        plt.close("all")
    return written
