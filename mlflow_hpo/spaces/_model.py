"""Typed search-space model: parameters, conditions, Optuna mapping."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

Choice = str | int | float | bool | None


@dataclasses.dataclass(frozen=True)
class Condition:
    """Activates a parameter only when ``parent`` took one of ``values``."""

    parent: str
    values: tuple[Choice, ...]

    def holds(self, chosen: Mapping[str, Any]) -> bool:
        return self.parent in chosen and chosen[self.parent] in self.values


@dataclasses.dataclass(frozen=True)
class Param:
    """One hyperparameter of a search space.

    Attributes:
        name: Name in the study and in MLflow; unique across all branches.
        kind: ``float``, ``int`` or ``categorical``.
        low, high: Bounds (inclusive) of numeric parameters.
        log: Sample on a log scale (numeric only; low must be > 0).
        step: Grid step of numeric parameters; None for continuous floats.
        choices: Options of a categorical parameter.
        condition: When set, the parameter exists only if the condition holds.
        tier: 1 for the most impactful parameters, higher for the rest.
        model_arg: Keyword of the model constructor; defaults to ``name``.
    """

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Choice, ...] = ()
    condition: Condition | None = None
    tier: int = 1
    model_arg: str = ""

    @property
    def argument(self) -> str:
        return self.model_arg or self.name

    def distribution(self) -> BaseDistribution:
        """Return the Optuna distribution of this parameter."""
        if self.kind == "categorical":
            return CategoricalDistribution(self.choices)
        assert self.low is not None and self.high is not None
        if self.kind == "int":
            step = 1 if self.step is None or self.log else int(self.step)
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=step)
        return FloatDistribution(float(self.low), float(self.high), log=self.log, step=None if self.log else self.step)

    def grid_values(self) -> list[Choice] | None:
        """Return every value of a discrete parameter, or None for a continuous one."""
        if self.kind == "categorical":
            return list(self.choices)
        assert self.low is not None and self.high is not None
        if self.kind == "int" and not self.log:
            step = int(self.step or 1)
            return list(range(int(self.low), int(self.high) + 1, step))
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1))
        if self.step is None:
            return None
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return [round(self.low + i * self.step, 12) for i in range(count)]

    def suggest(self, trial: optuna.Trial) -> Any:
        """Ask ``trial`` for a value of this parameter."""
        distribution = self.distribution()
        if isinstance(distribution, CategoricalDistribution):
            return trial.suggest_categorical(self.name, distribution.choices)
        if isinstance(distribution, IntDistribution):
            return trial.suggest_int(
                self.name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
            )
        assert isinstance(distribution, FloatDistribution)
        return trial.suggest_float(
            self.name, distribution.low, distribution.high, step=distribution.step, log=distribution.log
        )


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """An ordered set of parameters plus fixed model arguments.

    Parents come before the parameters that depend on them, so sampling in
    order always knows whether a conditional parameter is active.
    """

    params: tuple[Param, ...]
    fixed: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __iter__(self) -> Iterator[Param]:
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    def get(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample every active parameter; return ``{name: value}``."""
        chosen: dict[str, Any] = {}
        for param in self.params:
            if param.condition is not None and not param.condition.holds(chosen):
                continue
            chosen[param.name] = param.suggest(trial)
        return chosen

    def model_kwargs(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Translate sampled values into model constructor keywords, fixed ones first."""
        kwargs = dict(self.fixed)
        for param in self.params:
            if param.name in values:
                kwargs[param.argument] = values[param.name]
        return kwargs

    def distributions(self) -> dict[str, BaseDistribution]:
        return {p.name: p.distribution() for p in self.params}

    def is_conditional(self) -> bool:
        return any(p.condition is not None for p in self.params)

    def grid(self) -> dict[str, list[Choice]] | None:
        """Return the grid of every parameter, or None if a parameter is continuous."""
        grid: dict[str, list[Choice]] = {}
        for param in self.params:
            values = param.grid_values()
            if values is None:
                return None
            grid[param.name] = values
        return grid

    def grid_size(self) -> float:
        """Number of grid combinations; ``inf`` when a parameter is continuous."""
        grid = self.grid()
        if grid is None:
            return math.inf
        return float(math.prod(len(values) for values in grid.values()))

    def restrict(self, names: Sequence[str]) -> SearchSpace:
        """Return the space limited to ``names``, keeping order and fixed arguments."""
        wanted = set(names)
        return SearchSpace(tuple(p for p in self.params if p.name in wanted), self.fixed)
