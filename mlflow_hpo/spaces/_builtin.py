"""Built-in search spaces, with bounds scaled to the size of the training data.

Boosters tune the learning rate and L1/L2 penalties on log scales and leave
the number of rounds to early stopping. Tree-size bounds grow with the number
of training rows so that small tables cannot ask for leaves bigger than the
data. ``tier`` 1 marks the parameters that usually matter most.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from mlflow_hpo._errors import ConfigError
from mlflow_hpo.spaces._model import Condition, Param, SearchSpace


def _clamp(value: float, low: int, high: int) -> int:
    return int(max(low, min(high, value)))


def lightgbm_space(task: str, n_rows: int, n_features: int) -> SearchSpace:
    max_leaves = _clamp(n_rows / 10, 8, 256)
    max_child = _clamp(n_rows / 20, 6, 200)
    return SearchSpace(
        (
            Param("learning_rate", "float", 0.005, 0.3, log=True, tier=1),
            Param("num_leaves", "int", 4, max_leaves, log=True, tier=1),
            Param("min_child_samples", "int", 2, max_child, log=True, tier=1),
            Param("colsample_bytree", "float", _min_fraction(n_features), 1.0, tier=2),
            Param("subsample", "float", 0.5, 1.0, tier=2),
            Param("reg_alpha", "float", 1e-8, 10.0, log=True, tier=3),
            Param("reg_lambda", "float", 1e-8, 10.0, log=True, tier=3),
        ),
        fixed={"subsample_freq": 1},
    )


def xgboost_space(task: str, n_rows: int, n_features: int) -> SearchSpace:
    max_depth = _clamp(math.log2(max(n_rows, 2)), 3, 12)
    # DART-only parameters carry the branch prefix, so they never share a
    # name with a parameter of the gbtree branch.
    dart = Condition("booster", ("dart",))
    return SearchSpace(
        (
            Param("booster", "categorical", choices=("gbtree", "dart"), tier=2),
            Param("learning_rate", "float", 0.005, 0.3, log=True, tier=1),
            Param("max_depth", "int", 2, max_depth, tier=1),
            Param("min_child_weight", "float", 1e-2, 20.0, log=True, tier=1),
            Param("colsample_bytree", "float", _min_fraction(n_features), 1.0, tier=2),
            Param("subsample", "float", 0.5, 1.0, tier=2),
            Param("reg_alpha", "float", 1e-8, 10.0, log=True, tier=3),
            Param("reg_lambda", "float", 1e-8, 10.0, log=True, tier=3),
            Param("dart_rate_drop", "float", 0.0, 0.3, condition=dart, tier=3, model_arg="rate_drop"),
            Param("dart_skip_drop", "float", 0.0, 0.5, condition=dart, tier=3, model_arg="skip_drop"),
        ),
        fixed={"tree_method": "hist"},
    )


def hist_gradient_boosting_space(task: str, n_rows: int, n_features: int) -> SearchSpace:
    return SearchSpace(
        (
            Param("learning_rate", "float", 0.01, 0.3, log=True, tier=1),
            Param("max_leaf_nodes", "int", 4, _clamp(n_rows / 10, 8, 256), log=True, tier=1),
            Param("min_samples_leaf", "int", 2, _clamp(n_rows / 20, 6, 200), log=True, tier=1),
            Param("l2_regularization", "float", 1e-8, 10.0, log=True, tier=3),
            Param("max_features", "float", _min_fraction(n_features), 1.0, tier=2),
        )
    )


def _forest_space(task: str, n_rows: int, n_features: int) -> SearchSpace:
    criteria = ("gini", "entropy") if task != "regression" else ("squared_error", "absolute_error")
    return SearchSpace(
        (
            Param("max_features", "float", _min_fraction(n_features), 1.0, tier=1),
            Param("min_samples_leaf", "int", 1, _clamp(n_rows / 50, 2, 50), log=True, tier=1),
            Param("n_estimators", "int", 100, 500, step=50, tier=2),
            Param("max_depth", "int", 3, 30, log=True, tier=2),
            Param("criterion", "categorical", choices=criteria, tier=3),
        )
    )


def logistic_regression_space(task: str, n_rows: int, n_features: int) -> SearchSpace:
    return SearchSpace(
        (
            Param("C", "float", 1e-4, 1e3, log=True, tier=1),
            Param("class_weight", "categorical", choices=(None, "balanced"), tier=2),
        ),
        fixed={"max_iter": 2000},
    )


def ridge_space(task: str, n_rows: int, n_features: int) -> SearchSpace:
    return SearchSpace((Param("alpha", "float", 1e-4, 1e3, log=True, tier=1),))


def elastic_net_space(task: str, n_rows: int, n_features: int) -> SearchSpace:
    return SearchSpace(
        (
            Param("alpha", "float", 1e-5, 10.0, log=True, tier=1),
            Param("l1_ratio", "float", 0.0, 1.0, tier=1),
        ),
        fixed={"max_iter": 5000},
    )


def svm_space(task: str, n_rows: int, n_features: int) -> SearchSpace:
    params = [
        Param("C", "float", 1e-3, 1e3, log=True, tier=1),
        Param("gamma", "float", 1e-4, 1.0, log=True, tier=1),
    ]
    if task == "regression":
        params.append(Param("epsilon", "float", 1e-3, 1.0, log=True, tier=2))
    return SearchSpace(tuple(params), fixed={"kernel": "rbf"})


def _min_fraction(n_features: int) -> float:
    # At least one feature must remain when sampling columns.
    return round(max(0.3, min(0.9, 1.0 / max(n_features, 1) + 1e-9)), 3)


_SPACES: dict[str, Callable[[str, int, int], SearchSpace]] = {
    "lightgbm": lightgbm_space,
    "xgboost": xgboost_space,
    "hist_gradient_boosting": hist_gradient_boosting_space,
    "random_forest": _forest_space,
    "extra_trees": _forest_space,
    "logistic_regression": logistic_regression_space,
    "ridge": ridge_space,
    "elastic_net": elastic_net_space,
    "svm": svm_space,
}


def builtin_space(model: str, task: str, *, n_rows: int, n_features: int) -> SearchSpace:
    """Return the built-in space of ``model`` for a training table of the given shape."""
    factory = _SPACES.get(model)
    if factory is None:
        raise ConfigError(f"unknown model {model!r}; choose one of: {', '.join(_SPACES)}.")
    return factory(task, n_rows, n_features)
