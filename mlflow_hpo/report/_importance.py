"""Hyperparameter importance with Optuna's evaluators, robust to small and conditional studies.

PED-ANOVA (``importance=ped_anova``, the default) splits trials into
regimes where a parameter is active or not, so it also rates conditional
parameters that at least two completed trials sampled. fANOVA
(``importance=fanova``) fits a random forest on parameters present in
every completed trial, so it leaves conditional parameters out. Either
way, what was left out is listed with the reason, and the computation
only reads the stored trials.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.importance import (
    BaseImportanceEvaluator,
    FanovaImportanceEvaluator,
    PedAnovaImportanceEvaluator,
    get_param_importances,
)

from mlflow_hpo.multi_objective import completed_trials
from mlflow_hpo.report._context import ReportContext
from mlflow_hpo.tracking import safe_key

_logger = logging.getLogger(__name__)

# Importance is skipped below this many completed trials.
# NOTE: a judgment, not a measured threshold: with fewer trials a ranking mostly reflects noise.
MIN_COMPLETED_TRIALS = 5
# Trials that PED-ANOVA needs in each regime (active or inactive) of a parameter;
# Optuna 5.1 drops smaller regimes (PedAnovaImportanceEvaluator._min_n_trials_in_regime).
MIN_TRIALS_PER_REGIME = 2

Target = Callable[[optuna.trial.FrozenTrial], float]


def compute_importance(study: optuna.Study, ctx: ReportContext) -> dict[str, Any]:
    """Return the content of importance.json; never raises.

    Keys: ``evaluator``, ``target``, ``n_completed_trials``, ``importances``
    (parameter to normalized importance, largest first), ``per_objective``
    (multi-objective studies), ``left_out`` (parameter to reason) and
    ``skipped`` (the reason when nothing was computed, else None).
    """
    option = ctx.config.get("importance", "ped_anova") or "ped_anova"
    result: dict[str, Any] = {
        "evaluator": option,
        "target": "",
        "n_completed_trials": 0,
        "importances": {},
        "per_objective": {},
        "left_out": {},
        "skipped": None,
    }
    try:
        _compute(study, ctx, option, result)
    except Exception as exc:  # noqa: BLE001 - importance must never fail the parent run
        _logger.warning("Skipping hyperparameter importance: %s", exc, exc_info=True)
        result["importances"], result["per_objective"] = {}, {}
        result["skipped"] = f"the evaluator raised {type(exc).__name__}: {exc}"
    return result


def _compute(study: optuna.Study, ctx: ReportContext, option: str, result: dict[str, Any]) -> None:
    trials = completed_trials(study)
    result["n_completed_trials"] = len(trials)
    if option == "none":
        result["skipped"] = "importance=none"
        return
    if len(trials) < MIN_COMPLETED_TRIALS:
        result["skipped"] = (
            f"only {len(trials)} completed trials; importance needs at least {MIN_COMPLETED_TRIALS}"
        )
        return
    params, left_out = _evaluable_params(trials, ctx, option)
    result["left_out"] = left_out
    if not params:
        result["skipped"] = "no parameter can be evaluated; see left_out"
        return

    evaluator_factory = _evaluator_factory(option, ctx)
    result["evaluator"] = type(evaluator_factory()).__name__
    if not ctx.is_multi_objective:
        result["target"] = f"{ctx.objectives[0]} ({ctx.directions[0]}d)"
        result["importances"] = _evaluate(study, evaluator_factory(), params, None)
        return

    per_objective = {
        name: _evaluate(study, evaluator_factory(), params, _objective_target(index, ctx, option))
        for index, name in enumerate(ctx.objectives)
    }
    result["per_objective"] = per_objective
    if option == "ped_anova":
        result["target"] = "reaching the Pareto front of " + ", ".join(ctx.objectives)
        result["importances"] = _evaluate(study, evaluator_factory(), params, None)
    else:
        result["target"] = f"{ctx.objectives[0]} (fANOVA rates one objective at a time)"
        result["importances"] = per_objective[ctx.objectives[0]]


def _evaluable_params(
    trials: list[optuna.trial.FrozenTrial], ctx: ReportContext, option: str
) -> tuple[list[str], dict[str, str]]:
    """Split the space's parameters into those the evaluator can rate and the rest, with reasons."""
    names = list(ctx.param_names)
    for trial in trials:
        names += [name for name in trial.params if name not in names]
    n_trials = len(trials)
    params: list[str] = []
    left_out: dict[str, str] = {}
    for name in names:
        active = sum(1 for t in trials if name in t.params)
        if active == 0:
            left_out[name] = "not sampled in any completed trial"
        elif active == n_trials:
            params.append(name)
        elif option == "fanova":
            left_out[name] = (
                f"conditional: active in {active} of {n_trials} completed trials, and fANOVA needs "
                "a value in every trial; use importance=ped_anova to rate it"
            )
        elif min(active, n_trials - active) < MIN_TRIALS_PER_REGIME:
            left_out[name] = (
                f"conditional: active in {active} of {n_trials} completed trials, fewer than "
                f"{MIN_TRIALS_PER_REGIME} trials on one side"
            )
        else:
            params.append(name)
    return params, left_out


def _evaluator_factory(option: str, ctx: ReportContext) -> Callable[[], BaseImportanceEvaluator]:
    if option == "fanova":
        seed = int(ctx.seed) if ctx.seed.lstrip("-").isdigit() else None
        return lambda: FanovaImportanceEvaluator(seed=seed)
    return PedAnovaImportanceEvaluator


def _objective_target(index: int, ctx: ReportContext, option: str) -> Target:
    # PED-ANOVA rates what leads to low target values; fANOVA is indifferent to the sign.
    sign = -1.0 if option == "ped_anova" and ctx.directions[index] == "maximize" else 1.0
    return lambda trial: sign * trial.values[index]


def _evaluate(
    study: optuna.Study, evaluator: BaseImportanceEvaluator, params: list[str], target: Target | None
) -> dict[str, float]:
    with warnings.catch_warnings():
        # Optuna warns about small regimes and experimental features; the reasons are in left_out.
        warnings.simplefilter("ignore")
        values = get_param_importances(study, evaluator=evaluator, params=params, target=target)
    return {name: float(value) for name, value in values.items() if math.isfinite(value)}


def importance_metrics(importance: dict[str, Any]) -> dict[str, float]:
    """Return parent-run metrics ``importance_<param>`` for the main importances."""
    return {safe_key(f"importance_{name}"): value for name, value in importance.get("importances", {}).items()}
