"""Typed search-space model: parameters, conditions, Optuna mapping, grid counting."""

from __future__ import annotations

import dataclasses
import json
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

# Values that Optuna can store as categorical choices.
Choice = str | int | float | bool | None
KINDS = ("float", "int", "categorical")


def encode_choice(value: Any) -> Choice:
    """Return the value that Optuna stores for a categorical choice.

    Optuna stores only None, bool, int, float and str, so a list or a mapping
    is stored as its JSON text (keys sorted) and decoded again by `Param.decode`.
    """
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, sort_keys=True)


@dataclasses.dataclass(frozen=True)
class Condition:
    """Activates a parameter only when the categorical ``parent`` took one of ``values``.

    ``values`` contains the stored (encoded) choices of the parent.
    """

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
        choices: Stored options of a categorical parameter (see `encode_choice`).
        condition: When set, the parameter exists only if the condition holds.
        tier: 1 for the most impactful parameters, higher for the rest.
        model_arg: Keyword of the model constructor; defaults to ``name``.
        encoded_choices: Choices that are JSON text of a list or mapping.
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
    encoded_choices: tuple[str, ...] = ()

    @property
    def argument(self) -> str:
        return self.model_arg or self.name

    def decode(self, value: Any) -> Any:
        """Return the model value of a stored choice (lists and mappings come back from JSON)."""
        if isinstance(value, str) and value in self.encoded_choices:
            return json.loads(value)
        return value

    def distribution(self) -> BaseDistribution:
        """Return the Optuna distribution of this parameter."""
        if self.kind == "categorical":
            return CategoricalDistribution(self.choices)
        assert self.low is not None and self.high is not None
        if self.kind == "int":
            int_step = 1 if self.step is None or self.log else int(self.step)
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int_step)
        float_step = None if self.log else self.step
        return FloatDistribution(float(self.low), float(self.high), log=self.log, step=float_step)

    def grid_values(self) -> list[Choice] | None:
        """Return every value of a discrete parameter, or None for a continuous one."""
        if self.kind == "categorical":
            return list(self.choices)
        assert self.low is not None and self.high is not None
        if self.kind == "int":
            step = 1 if self.log else int(self.step or 1)
            return list(range(int(self.low), int(self.high) + 1, step))
        if self.step is None:
            return None
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return [round(self.low + i * self.step, 12) for i in range(count)]

    def suggest(self, trial: optuna.Trial) -> Any:
        """Ask ``trial`` for a value of this parameter; return the stored value."""
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

    def to_spec(self) -> dict[str, Any]:
        """Return the space-file entry of this parameter, with the namespaced name kept as is."""
        spec: dict[str, Any] = {"type": self.kind}
        if self.kind == "categorical":
            spec["choices"] = [self.decode(choice) for choice in self.choices]
        else:
            spec["low"], spec["high"] = self.low, self.high
            if self.log:
                spec["log"] = True
            if self.step is not None:
                spec["step"] = self.step
        if self.condition is not None:
            spec["when"] = {self.condition.parent: list(self.condition.values)}
        spec["tier"] = self.tier
        spec["arg"] = self.argument
        return spec


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """An ordered set of parameters plus fixed model arguments.

    Parents come before the parameters that depend on them, so sampling in
    order has always sampled the parent of a conditional parameter first.
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

    @property
    def tiers(self) -> list[int]:
        return sorted({p.tier for p in self.params})

    def get(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def suggest(self, trial: optuna.Trial, *, only: Sequence[str] | None = None) -> dict[str, Any]:
        """Sample every active parameter (or only those named in ``only``); return ``{name: value}``."""
        chosen: dict[str, Any] = {}
        for param in self.params:
            if only is not None and param.name not in only:
                continue
            if param.condition is not None and not param.condition.holds(chosen):
                continue
            chosen[param.name] = param.suggest(trial)
        return chosen

    def model_kwargs(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Translate stored values into model constructor keywords, fixed ones first."""
        kwargs = dict(self.fixed)
        for param in self.params:
            if param.name in values:
                kwargs[param.argument] = param.decode(values[param.name])
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

    def continuous_params(self) -> list[str]:
        return [p.name for p in self.params if p.grid_values() is None]

    def grid_size(self) -> float:
        """Number of distinct configurations; ``inf`` when an active parameter is continuous.

        A conditional parameter counts only under the parent values that
        activate it, so a space with a ``gbtree`` and a ``dart`` branch has
        the sum of both branches' sizes, not their product.
        """
        children: dict[str, list[Param]] = {}
        for param in self.params:
            if param.condition is not None:
                children.setdefault(param.condition.parent, []).append(param)

        def size(param: Param) -> float:
            values = param.grid_values()
            if values is None:
                return math.inf
            total = 0.0
            for value in values:
                active = [c for c in children.get(param.name, []) if c.condition and value in c.condition.values]
                total += math.prod(size(child) for child in active)
            return total

        return float(math.prod(size(p) for p in self.params if p.condition is None))

    def restrict(self, names: Sequence[str]) -> SearchSpace:
        """Return the space limited to ``names``, keeping order and fixed arguments."""
        wanted = set(names)
        return SearchSpace(tuple(p for p in self.params if p.name in wanted), self.fixed)

    def to_spec(self) -> dict[str, Any]:
        """Return the space as a mapping that `parse_space` turns back into an equal space."""
        return {
            "params": {p.name: p.to_spec() for p in self.params},
            "fixed": dict(self.fixed),
        }
