"""Model families: build, fit with early stopping, refit."""

from mlflow_hpo._errors import ConfigError
from mlflow_hpo.models._base import FitContext, FitResult, ModelAdapter, RoundCallback
from mlflow_hpo.models._boosters import LightGBMAdapter, XGBoostAdapter
from mlflow_hpo.models._sklearn import SKLEARN_ADAPTERS

__all__ = ["FitContext", "FitResult", "ModelAdapter", "RoundCallback", "get_adapter"]

_ADAPTERS: dict[str, ModelAdapter] = {
    "lightgbm": LightGBMAdapter(),
    "xgboost": XGBoostAdapter(),
    **SKLEARN_ADAPTERS,
}


def get_adapter(model: str, task: str) -> ModelAdapter:
    """Return the adapter of ``model``; raise ConfigError if it cannot handle ``task``."""
    adapter = _ADAPTERS.get(model)
    if adapter is None:
        raise ConfigError(f"unknown model {model!r}; choose one of: {', '.join(_ADAPTERS)}.")
    if task not in adapter.tasks:
        fitting = [name for name, other in _ADAPTERS.items() if task in other.tasks]
        raise ConfigError(
            f"model={model!r} does not support task={task!r}; use one of: {', '.join(fitting)}."
        )
    return adapter
