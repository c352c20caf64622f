"""Search spaces: the typed model and the built-in spaces per model family."""

from mlflow_hpo.spaces._builtin import builtin_space
from mlflow_hpo.spaces._model import Condition, Param, SearchSpace

__all__ = ["Condition", "Param", "SearchSpace", "builtin_space"]
