"""Spaces stored with a study: signatures, per-parameter differences, and rebuilding."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
    json_to_distribution,
)

from mlflow_hpo.spaces._loader import parse_space
from mlflow_hpo.spaces._model import Param, SearchSpace

# Study user attributes: the Optuna distribution of every parameter (JSON per
# name), and the full space-file mapping with conditions, tiers and arguments.
SIGNATURE_ATTR = "search_space"
SPEC_ATTR = "search_space_spec"


def space_signature(space: SearchSpace) -> dict[str, str]:
    """Return ``{name: distribution JSON}``, which a stored study keeps to detect an edited space."""
    return {name: distribution_to_json(dist) for name, dist in space.distributions().items()}


def _describe(text: str) -> str:
    try:
        dist = json_to_distribution(text)
    except (ValueError, KeyError, TypeError):
        return text
    if isinstance(dist, CategoricalDistribution):
        return f"choices {list(dist.choices)}"
    assert isinstance(dist, (FloatDistribution, IntDistribution))
    kind = "int" if isinstance(dist, IntDistribution) else "float"
    scale = ", log" if dist.log else ""
    step = f", step {dist.step:g}" if dist.step is not None and not (kind == "int" and dist.step == 1) else ""
    return f"{kind} [{dist.low:g}, {dist.high:g}{scale}{step}]"


def describe_changes(stored: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """Return one line per parameter that differs between two signatures, e.g.
    ``booster: choices ['gbtree', 'dart'] -> choices ['gbtree']``."""
    changes = []
    for name in stored:
        if name not in current:
            changes.append(f"{name}: removed (was {_describe(stored[name])})")
        elif stored[name] != current[name]:
            changes.append(f"{name}: {_describe(stored[name])} -> {_describe(current[name])}")
    for name in current:
        if name not in stored:
            changes.append(f"{name}: added ({_describe(current[name])})")
    return changes


def space_from_distributions(distributions: Mapping[str, BaseDistribution]) -> SearchSpace:
    """Rebuild the parameters that a set of Optuna distributions describes (no conditions or tiers)."""
    params = []
    for name, dist in distributions.items():
        if isinstance(dist, CategoricalDistribution):
            params.append(Param(name, "categorical", choices=tuple(dist.choices)))
        elif isinstance(dist, IntDistribution):
            step = None if dist.log or dist.step == 1 else dist.step
            params.append(Param(name, "int", dist.low, dist.high, log=dist.log, step=step))
        elif isinstance(dist, FloatDistribution):
            params.append(Param(name, "float", dist.low, dist.high, log=dist.log, step=dist.step))
        else:
            raise TypeError(f"unsupported distribution {type(dist).__name__} for {name!r}")
    return SearchSpace(tuple(params))


def space_from_study(study: optuna.Study) -> SearchSpace:
    """Rebuild the search space a study was created with.

    The stored space-file mapping gives the full space. Studies without it
    fall back to the distributions of their signature, without conditions.
    """
    spec: Any = study.user_attrs.get(SPEC_ATTR)
    if isinstance(spec, Mapping):
        return parse_space(spec, source=f"stored with study {study.study_name!r}")
    signature = study.user_attrs.get(SIGNATURE_ATTR) or {}
    return space_from_distributions({name: json_to_distribution(text) for name, text in signature.items()})
