"""Hyperparameter tuning with Optuna, recorded and registered in MLflow.

The public API is `tune`, which takes a `TuneConfig` and returns a
`TuneResult`. Every other way in (``mlflow run``, the ``mlflow-hpo``
console script, a YAML config file) builds a `TuneConfig` and calls it.
"""

__version__ = "0.1.0"

from mlflow_hpo._errors import ConfigError, HpoError, TrialError  # noqa: E402
from mlflow_hpo.config import TuneConfig  # noqa: E402
from mlflow_hpo.study import TuneResult, tune  # noqa: E402

__all__ = ["ConfigError", "HpoError", "TrialError", "TuneConfig", "TuneResult", "__version__", "tune"]
