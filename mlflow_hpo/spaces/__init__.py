"""Search spaces: the typed model, space files, and the built-in spaces per model family."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlflow_hpo._errors import ConfigError
from mlflow_hpo.spaces._builtin import builtin_space
from mlflow_hpo.spaces._compat import (
    SIGNATURE_ATTR,
    SPEC_ATTR,
    describe_changes,
    space_from_distributions,
    space_from_study,
    space_signature,
)
from mlflow_hpo.spaces._loader import SpaceError, parse_space, read_space_file
from mlflow_hpo.spaces._model import Condition, Param, SearchSpace, encode_choice

if TYPE_CHECKING:
    from mlflow_hpo.config import TuneConfig

__all__ = [
    "SIGNATURE_ATTR",
    "SPEC_ATTR",
    "Condition",
    "Param",
    "SearchSpace",
    "SpaceError",
    "builtin_space",
    "describe_changes",
    "encode_choice",
    "parse_space",
    "read_space_file",
    "resolve_space",
    "space_from_distributions",
    "space_from_study",
    "space_signature",
]


def resolve_space(config: TuneConfig, task: str, *, n_rows: int, n_features: int) -> SearchSpace:
    """Return the space of the job: the user's file or ``space:`` section, else the built-in one.

    A user space with ``extends: builtin`` starts from the built-in space of
    ``config.model`` for a training table of ``n_rows`` by ``n_features``.
    """
    base = builtin_space(config.model, task, n_rows=n_rows, n_features=n_features)
    if config.space and config.space_spec is not None:
        raise ConfigError(
            f"space={config.space!r} and the config file's space: section both define a search space; "
            "keep only one of them."
        )
    if config.space:
        return parse_space(read_space_file(config.space), base=base, source=f"in {config.space!r}")
    if config.space_spec is not None:
        return parse_space(config.space_spec, base=base, source="in the config file's space: section")
    return base
