"""Multi-objective studies: secondary objectives, Pareto fronts and the selection rule.

``metric=roc_auc,latency`` makes a study with one objective per name. The
first name must be a scikit-learn scorer: it drives cross-validation and
the held-out test. Every further name is another scorer (its mean over the
same folds) or a built-in secondary objective:

- ``latency``: milliseconds to predict 1,000 rows, the median of
  ``LATENCY_REPEATS`` timed calls after one warm-up call, measured on the
  model fitted on the first CV training fold. Rows are the fold's scoring
  rows after preprocessing, repeated up to 1,000. Minimized.
- ``model_size``: bytes of the pickled estimator fitted on the first CV
  training fold. Minimized.

Optuna pruners compare one intermediate value per step, so a
multi-objective study runs without pruning. After the study, the model to
refit and register is chosen by the ``select`` rule (see `parse_select`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import pickle
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import pandas as pd
from mlflow.tracking import MlflowClient

from mlflow_hpo._errors import ConfigError
from mlflow_hpo.metrics import Objective, resolve_objective

if TYPE_CHECKING:
    from mlflow_hpo.config import TuneConfig
    from mlflow_hpo.study import Job

_logger = logging.getLogger(__name__)

LATENCY = "latency"
MODEL_SIZE = "model_size"
LATENCY_ROWS = 1000
LATENCY_REPEATS = 5
LATENCY_METHOD = (
    f"median of {LATENCY_REPEATS} timed predict calls on {LATENCY_ROWS} preprocessed rows, "
    "measured on the model fitted on the first CV training fold"
)
MODEL_SIZE_METHOD = "bytes of the pickled estimator fitted on the first CV training fold"
# Child-run metric (and trials.csv column) of each built-in secondary objective.
BUILTIN_METRIC = {LATENCY: "latency_ms_per_1000_rows", MODEL_SIZE: "model_size_bytes"}
OBJECTIVE_METRICS_ATTR = "objective_metrics"
TAG_PARETO = "mlflow_hpo.pareto"
TAG_TRIAL = "mlflow_hpo.trial_number"
DEFAULT_SELECT = "knee"

_CONSTRAINT = re.compile(r"^\s*(?P<name>[A-Za-z_][\w.]*)\s*(?P<op><=|>=|<|>)\s*(?P<bound>[^<>=\s]+)\s*$")
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


@dataclasses.dataclass(frozen=True)
class SecondaryObjective:
    """An objective after the first: a scorer's CV mean, ``latency`` or ``model_size``."""

    name: str
    direction: str
    scorer: Any = None

    @property
    def metric_key(self) -> str:
        """Child-run metric name of this objective."""
        return BUILTIN_METRIC.get(self.name, f"cv_{self.name}_mean")


def prepare_objectives(config: TuneConfig, task: str) -> tuple[TuneConfig, Objective, tuple[SecondaryObjective, ...]]:
    """Check the objectives and ``select`` of ``config`` before the first trial.

    Returns the config (pruning off when there are several objectives), the
    first objective (recording the others during a trial) and the others.

    Raises:
        ConfigError: on an invalid metric list or ``select`` rule.
    """
    first = resolve_objective(config.metrics[0], task)
    secondary = resolve_secondary(config, task)
    if secondary and config.staged:
        raise ConfigError(
            f"staged=true picks the first stage's best trial by one score, but metric={config.metric!r} "
            "has several objectives; set staged=false or tune one metric."
        )
    names = [first.name, *(s.name for s in secondary)]
    check_select(config, names, [first.direction, *(s.direction for s in secondary)])
    if secondary:
        first = dataclasses.replace(first, scorer=RecordingScorer(first.scorer, secondary))
    return checked_config(config), first, secondary


def objective_names(job: Job) -> list[str]:
    """Return the objective names of ``job``, with ``auto`` resolved to its scorer."""
    return [job.objective.name, *(s.name for s in secondary_of(job))]


def resolve_secondary(config: TuneConfig, task: str) -> tuple[SecondaryObjective, ...]:
    """Check every metric name after the first and derive its direction.

    Raises:
        ConfigError: if the first name is a built-in secondary objective, a
            name repeats, or a name is neither a scorer nor built in.
    """
    names = config.metrics
    if names[0] in BUILTIN_METRIC:
        raise ConfigError(
            f"metric={config.metric!r} starts with {names[0]!r}, but the first objective must be a "
            f"scikit-learn scorer that cross-validation maximizes; use e.g. metric=roc_auc,{names[0]}."
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(
            f"metric={config.metric!r} names {', '.join(repeated)} more than once; list each objective once."
        )
    secondary: list[SecondaryObjective] = []
    for name in names[1:]:
        if name in BUILTIN_METRIC:
            secondary.append(SecondaryObjective(name, "minimize"))
            continue
        try:
            objective = resolve_objective(name, task)
        except ConfigError as exc:
            raise ConfigError(
                f"metric name {name!r} in metric={config.metric!r} is neither a scikit-learn scorer nor a "
                f"built-in secondary objective ({', '.join(BUILTIN_METRIC)}): {exc}"
            ) from None
        secondary.append(SecondaryObjective(objective.name, objective.direction, objective.scorer))
    return tuple(secondary)


def checked_config(config: TuneConfig) -> TuneConfig:
    """Return ``config`` with pruning off when it has several objectives."""
    if not config.is_multi_objective or config.pruner == "none":
        return config
    message = (
        f"pruner={config.pruner!r} is switched off: metric={config.metric!r} makes a multi-objective "
        "study, and Optuna prunes only single-objective trials."
    )
    if config.pruner == "auto":
        _logger.info(message)
    else:
        _logger.warning(message)
    return config.replace(pruner="none")


def directions(job: Job) -> list[str]:
    """Return the study directions: the scorer's, then each secondary objective's."""
    return [job.objective.direction] + [s.direction for s in secondary_of(job)]


def check_stored_directions(study: optuna.Study, job: Job) -> None:
    """Raise ConfigError if a resumed study has other objective directions than ``job``."""
    stored = [d.name.lower() for d in study.directions]
    expected = directions(job)
    if stored != expected:
        raise ConfigError(
            f"study {job.study_name!r} was created with directions {stored}, but metric={job.config.metric!r} "
            f"gives {expected}; resume it with its own metric list or use a new study_name such as "
            f"{job.study_name}-v2."
        )


def secondary_of(job: Job) -> tuple[SecondaryObjective, ...]:
    return tuple(getattr(job, "secondary", ()))


class _Recorder(threading.local):
    """Per-thread store of secondary values while one trial cross-validates."""

    values: dict[str, list[float]] | None = None


class RecordingScorer:
    """Scorer of the first objective that also records the secondary objectives of each fold.

    Recording happens only while an objective from
    `multi_objective_function` runs a trial, so other callers of the scorer
    (such as the held-out test) see a plain scorer.
    """

    def __init__(self, scorer: Any, secondary: tuple[SecondaryObjective, ...]) -> None:
        self.scorer = scorer
        self.secondary = secondary
        self.recorder = _Recorder()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["scorer"], name)

    def __call__(self, estimator: Any, X: pd.DataFrame, y: np.ndarray, *args: Any, **kwargs: Any) -> float:
        score = float(self.scorer(estimator, X, y, *args, **kwargs))
        values = self.recorder.values
        if values is None:
            return score
        first_fold = not any(values.values())
        for objective in self.secondary:
            if objective.name == LATENCY:
                if first_fold:
                    values[objective.name].append(measure_latency(estimator, X))
            elif objective.name == MODEL_SIZE:
                if first_fold:
                    values[objective.name].append(float(len(pickle.dumps(estimator, protocol=5))))
            else:
                values[objective.name].append(float(objective.scorer(estimator, X, y)))
        return score


def measure_latency(estimator: Any, X: pd.DataFrame) -> float:
    """Return the median milliseconds that ``estimator.predict`` takes on 1,000 rows."""
    index = np.resize(np.arange(len(X)), LATENCY_ROWS)
    rows = X.iloc[index] if isinstance(X, pd.DataFrame) else np.asarray(X)[index]
    estimator.predict(rows)
    timings = []
    for _ in range(LATENCY_REPEATS):
        started = time.perf_counter()
        estimator.predict(rows)
        timings.append((time.perf_counter() - started) * 1000.0)
    return float(np.median(timings))


def multi_objective_function(
    job: Job, single: Callable[[optuna.Trial], float]
) -> Callable[[optuna.Trial], float | Sequence[float]]:
    """Return an objective that adds the secondary values to ``single``'s CV mean."""
    secondary = secondary_of(job)
    scorer = job.objective.scorer
    if not secondary or not isinstance(scorer, RecordingScorer):
        return single

    def objective(trial: optuna.Trial) -> Sequence[float]:
        scorer.recorder.values = {s.name: [] for s in secondary}
        try:
            first = single(trial)
            recorded = scorer.recorder.values
        finally:
            scorer.recorder.values = None
        values = [first] + [float(np.mean(recorded[s.name])) for s in secondary]
        trial.set_user_attr(OBJECTIVE_METRICS_ATTR, {s.metric_key: v for s, v in zip(secondary, values[1:], strict=True)})
        return values

    return objective


def trial_metrics(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
    """Return the secondary objectives of ``trial`` as child-run metrics."""
    return dict(trial.user_attrs.get(OBJECTIVE_METRICS_ATTR, {}))


@dataclasses.dataclass(frozen=True)
class Constraint:
    """A bound such as ``latency<5`` that a selected trial must meet."""

    name: str
    op: str
    bound: float

    def holds(self, value: float) -> bool:
        return _OPERATORS[self.op](value, self.bound)

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.bound:g}"


@dataclasses.dataclass(frozen=True)
class SelectRule:
    """Rule that chooses the trial to refit and register from a multi-objective study.

    ``goal`` is ``knee``, ``max`` or ``min``; ``target`` names the objective
    of ``max`` and ``min``; ``constraints`` filter the trials first.
    """

    goal: str
    target: str = ""
    constraints: tuple[Constraint, ...] = ()

    def __str__(self) -> str:
        head = "knee" if self.goal == "knee" else f"{self.goal}:{self.target}"
        return "|".join([head, *map(str, self.constraints)])


def parse_select(text: str, names: Sequence[str], study_directions: Sequence[str]) -> SelectRule:
    """Parse a ``select`` option and check it against the objectives.

    Syntax: parts joined by ``|``. At most one part is the goal: ``knee``
    (the default: the Pareto-optimal trial closest to the ideal point once
    each objective is scaled to [0, 1] over the front), ``max:<objective>``
    or ``min:<objective>``. Every other part is a constraint
    ``<objective><op><number>`` with ``op`` one of ``<``, ``<=``, ``>``,
    ``>=``. Example: ``max:roc_auc|latency<5``.

    Raises:
        ConfigError: on a syntax error, an unknown objective name, or a goal
            against the objective's direction (``max:latency``).
    """
    known = ", ".join(names)
    goal, target, constraints = "", "", []
    for part in (p.strip() for p in (text or DEFAULT_SELECT).split("|")):
        match = _CONSTRAINT.match(part)
        if match:
            constraints.append(_constraint(match, text, names))
            continue
        head, _, name = part.partition(":")
        valid_goal = (head == "knee" and not name) or (head in ("max", "min") and bool(name))
        if goal or not valid_goal:
            raise ConfigError(
                f"select={text!r} has an invalid part {part!r}; use knee, max:<objective> or "
                f"min:<objective>, then optional |<objective><op><number> bounds, e.g. "
                f"select=max:{names[0]}|{names[-1]}<5."
            )
        if head != "knee":
            _check_goal(head, name, text, names, study_directions)
        goal, target = head, name
    if not constraints and not goal:
        raise ConfigError(f"select={text!r} is empty; use knee or max:<objective>, objectives: {known}.")
    return SelectRule(goal or "knee", target, tuple(constraints))


def _constraint(match: re.Match[str], text: str, names: Sequence[str]) -> Constraint:
    name, op, bound = match["name"], match["op"], match["bound"]
    if name not in names:
        raise ConfigError(f"select={text!r} bounds {name!r}, which is not an objective; use one of: {', '.join(names)}.")
    try:
        value = float(bound)
    except ValueError:
        raise ConfigError(f"select={text!r} bounds {name} by {bound!r}, which is not a number; use e.g. {name}{op}5.") from None
    if not math.isfinite(value):
        raise ConfigError(f"select={text!r} bounds {name} by {bound!r}; use a finite number.")
    return Constraint(name, op, value)


def _check_goal(goal: str, name: str, text: str, names: Sequence[str], study_directions: Sequence[str]) -> None:
    if name not in names:
        raise ConfigError(f"select={text!r} optimizes {name!r}, which is not an objective; use one of: {', '.join(names)}.")
    direction = study_directions[list(names).index(name)]
    expected = "max" if direction == "maximize" else "min"
    if goal != expected:
        raise ConfigError(
            f"select={text!r} asks for {goal}:{name}, but the study {direction}s {name}; use {expected}:{name}."
        )


def check_select(config: TuneConfig, names: Sequence[str], study_directions: Sequence[str]) -> SelectRule:
    """Parse ``config.select`` before the first trial; single-objective studies accept only ``knee``."""
    if len(names) == 1 and config.select.strip() not in ("", DEFAULT_SELECT):
        raise ConfigError(
            f"select={config.select!r} applies to multi-objective studies, but metric={config.metric!r} "
            "has one objective, whose best trial is registered; remove select or add an objective."
        )
    return parse_select(config.select, names, study_directions)


@dataclasses.dataclass(frozen=True)
class Selection:
    """The chosen trial and the reason for the choice, as one sentence."""

    trial: optuna.trial.FrozenTrial
    reason: str


def pareto_mask(values: np.ndarray, study_directions: Sequence[str]) -> np.ndarray:
    """Return which rows of ``values`` (trials x objectives) no other row dominates."""
    signs = np.array([1.0 if d == "maximize" else -1.0 for d in study_directions])
    gains = values * signs
    mask = np.ones(len(gains), dtype=bool)
    for i, row in enumerate(gains):
        dominated_by = np.all(gains >= row, axis=1) & np.any(gains > row, axis=1)
        mask[i] = not dominated_by.any()
    return mask


def pareto_ranks(values: np.ndarray, study_directions: Sequence[str]) -> np.ndarray:
    """Return each row's non-domination rank: 0 for the Pareto front, 1 for the next front, ..."""
    ranks = np.full(len(values), -1)
    remaining = np.arange(len(values))
    rank = 0
    while remaining.size:
        front = pareto_mask(values[remaining], study_directions)
        ranks[remaining[front]] = rank
        remaining = remaining[~front]
        rank += 1
    return ranks


def select_trial(
    trials: Sequence[optuna.trial.FrozenTrial], names: Sequence[str], study_directions: Sequence[str], rule: SelectRule
) -> Selection:
    """Choose the trial that ``rule`` picks from the completed ``trials``.

    When no trial meets the constraints, the rule's goal applies to all
    trials and the reason states it.

    Raises:
        ValueError: if ``trials`` is empty.
    """
    if not trials:
        raise ValueError("no completed trial to select from")
    values = np.array([t.values for t in trials], dtype=float)
    feasible = np.ones(len(trials), dtype=bool)
    for constraint in rule.constraints:
        column = values[:, list(names).index(constraint.name)]
        feasible &= np.array([constraint.holds(v) for v in column])
    note = ""
    if rule.constraints and not feasible.any():
        bounds = " and ".join(map(str, rule.constraints))
        note = f"; no trial met {bounds}, so the goal was applied to all {len(trials)} trials"
        feasible[:] = True
    candidates = np.flatnonzero(feasible)
    if rule.goal == "knee":
        index, why = _knee(values[candidates], study_directions)
        chosen = int(candidates[index])
    else:
        column = values[candidates, list(names).index(rule.target)]
        position = int(np.argmax(column) if rule.goal == "max" else np.argmin(column))
        chosen = int(candidates[position])
        why = f"{rule.goal} {rule.target} = {values[chosen, list(names).index(rule.target)]:.6g}"
    met = f" among the {len(candidates)} trials with {' and '.join(map(str, rule.constraints))}" if rule.constraints and not note else ""
    reason = f"select={rule} chose trial {trials[chosen].number}: {why}{met}{note}."
    return Selection(trials[chosen], reason)


def _knee(values: np.ndarray, study_directions: Sequence[str]) -> tuple[int, str]:
    front = np.flatnonzero(pareto_mask(values, study_directions))
    signs = np.array([1.0 if d == "maximize" else -1.0 for d in study_directions])
    gains = values[front] * signs
    low, high = gains.min(axis=0), gains.max(axis=0)
    span = np.where(high > low, high - low, 1.0)
    scaled = np.where(high > low, (gains - low) / span, 1.0)
    distance = np.linalg.norm(1.0 - scaled, axis=1)
    best = int(np.argmin(distance))
    why = (
        f"knee of the {len(front)}-trial Pareto front (closest to the ideal point after scaling "
        f"each objective to [0, 1] over the front, distance {distance[best]:.3g})"
    )
    return int(front[best]), why


def choose_trial(study: optuna.Study, job: Job) -> Selection:
    """Return the trial to refit: the best one, or the ``select`` rule's choice with several objectives.

    Raises:
        ValueError: if the study has no completed trial.
    """
    if not study._is_multi_objective():
        best = study.best_trial
        return Selection(best, f"trial {best.number} has the best CV {job.objective.name}.")
    names = objective_names(job)
    trials = completed_trials(study)
    rule = parse_select(job.config.select, names, directions(job))
    return select_trial(trials, names, directions(job), rule)


def completed_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Return completed trials whose values are all finite."""
    return [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.values is not None and all(math.isfinite(v) for v in t.values)
    ]


def tag_pareto_children(client: MlflowClient, parent_run_id: str, study: optuna.Study) -> int:
    """Tag the child runs of Pareto-optimal trials with ``mlflow_hpo.pareto=true``.

    Children that carried the tag from an earlier front get ``false``.
    Returns the number of children tagged true.
    """
    if not study._is_multi_objective():
        return 0
    front = {t.number for t in study.best_trials}
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    query = f"tags.`mlflow.parentRunId` = '{parent_run_id}'"
    tagged = 0
    token = None
    while True:
        page = client.search_runs([experiment_id], filter_string=query, max_results=1000, page_token=token)
        for run in page:
            number = run.data.tags.get(TAG_TRIAL)
            if number is None:
                continue
            if int(number) in front:
                client.set_tag(run.info.run_id, TAG_PARETO, "true")
                tagged += 1
            elif run.data.tags.get(TAG_PARETO) == "true":
                client.set_tag(run.info.run_id, TAG_PARETO, "false")
        token = page.token
        if not token:
            break
    if tagged < len(front):
        _logger.warning(
            "Only %d of %d Pareto-optimal trials have a child run under parent %s to tag.",
            tagged, len(front), parent_run_id,
        )
    return tagged
