"""Search spaces: file format, validation, branch names, Optuna round trips, resume checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from mlflow_hpo import TuneConfig, tune
from mlflow_hpo._errors import ConfigError
from mlflow_hpo.cli import main
from mlflow_hpo.config import MODELS
from mlflow_hpo.spaces import (
    SPEC_ATTR,
    Param,
    SearchSpace,
    SpaceError,
    builtin_space,
    parse_space,
    read_space_file,
    resolve_space,
    space_from_distributions,
    space_from_study,
    space_signature,
)
from mlflow_hpo.storage import open_storage, storage_url
from mlflow_hpo.study import free_study_name
from mlflow_hpo.tracking import TAG_PARENT, TAG_TRIAL

# Small, fast settings for end-to-end runs on a linear model.
FAST = {"model": "logistic_regression", "cv": "stratified", "n_folds": 3, "register_model": ""}


def _write(path: Path, content: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return str(path)


def _problems(spec: dict[str, Any], base: SearchSpace | None = None) -> list[str]:
    with pytest.raises(SpaceError) as info:
        parse_space(spec, base=base)
    return info.value.problems


def test_space_file_reports_every_problem_at_once() -> None:
    spec = {
        "params": {
            "C": {"type": "float", "low": 0, "high": 10, "log": True},
            "n": {"type": "int", "low": 1, "high": 64, "log": True, "step": 2},
            "alpha": {"type": "float", "low": 5, "high": 1},
            "gamma": {"type": "float", "low": 0.1, "hihg": 1},
            "weights": {"choices": [{"a": 1}, None, "balanced"]},
        },
        "fixd": {"max_iter": 100},
    }

    problems = _problems(spec)

    assert len(problems) == 6
    assert problems[0].startswith("unknown key 'fixd'")
    assert "params.C: a log range must start above 0, got low=0" in problems[1]
    assert "params.n: step cannot be combined with log: true" in problems[2]
    assert "params.alpha: low must be below high, got low=5, high=1" in problems[3]
    assert "params.gamma: unknown key 'hihg'" in problems[4]
    assert "params.gamma: high must be a finite number" in problems[5]


def test_space_error_is_one_numbered_line() -> None:
    with pytest.raises(ConfigError, match=r"invalid search space in 'x.yaml' \(2 problems\): \[1\] .* \[2\] ") as info:
        parse_space(
            {"params": {"a": {"type": "float", "low": 1, "high": 1}, "b": {"type": "bogus"}}},
            source="in 'x.yaml'",
        )
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"type": "int", "low": 1.5, "high": 4}, r"low of an int parameter must be a whole number, got low=1.5"),
        ({"type": "float", "low": 0, "high": 1, "step": 0.3}, r"not a multiple of step=0.3; use high=0.9"),
        ({"type": "float", "low": 0, "high": 1, "step": -1}, r"step must be a positive number"),
        ({"choices": []}, r"choices must be a non-empty list"),
        ({"choices": ["a", "a"]}, r"choice 'a' is listed twice"),
        ({"type": "categorical", "choices": ["a"], "low": 1}, r"low does not apply to a categorical parameter"),
        ({"type": "float", "low": 0, "high": 1, "tier": 0}, r"tier must be a whole number of at least 1"),
        ({"type": "float", "low": 0, "high": 1, "log": "yes"}, r"log must be true or false"),
        ("0.1..1", r"params.x must be a mapping"),
        ({"type": "float", "low": 0, "high": 1, "when": {"a": 1, "b": 2}}, r"when must name one parent"),
        ({"type": "float", "low": 0, "high": 1, "when": {"missing": "x"}}, r"not a parameter of the space"),
    ],
)
def test_invalid_param_entry_is_named(entry: Any, message: str) -> None:
    with pytest.raises(SpaceError, match=message):
        parse_space({"params": {"x": entry}})


def test_condition_on_numeric_parent_rejected() -> None:
    spec = {"params": {"a": {"type": "int", "low": 1, "high": 3}, "b": {"type": "float", "low": 0, "high": 1, "when": {"a": 2}}}}

    with pytest.raises(SpaceError, match=r"when needs a categorical parent, but 'a' is int"):
        parse_space(spec)


def test_condition_on_unknown_choice_rejected() -> None:
    spec = {
        "params": {
            "booster": {"choices": ["gbtree", "dart"]},
            "rate_drop": {"type": "float", "low": 0, "high": 1, "when": {"booster": "gblinear"}},
        }
    }

    with pytest.raises(SpaceError, match=r"when values \['gblinear'\] are not choices of 'booster'"):
        parse_space(spec)


def test_non_primitive_choices_decoded() -> None:
    space = parse_space({"params": {"class_weight": {"choices": [None, "balanced", {"0": 1, "1": 3}, [1, 2]]}}})
    param = space.params[0]

    assert param.choices == (None, "balanced", '{"0": 1, "1": 3}', "[1, 2]")
    assert param.distribution() == optuna.distributions.CategoricalDistribution(param.choices)
    assert space.model_kwargs({"class_weight": '{"0": 1, "1": 3}'}) == {"class_weight": {"0": 1, "1": 3}}
    assert space.model_kwargs({"class_weight": "[1, 2]"}) == {"class_weight": [1, 2]}
    assert space.model_kwargs({"class_weight": None}) == {"class_weight": None}
    assert space.model_kwargs({"class_weight": "balanced"}) == {"class_weight": "balanced"}


def test_json_like_string_choice_kept() -> None:
    space = parse_space({"params": {"layout": {"choices": ["[1, 2]", "wide"]}}})

    assert space.model_kwargs({"layout": "[1, 2]"}) == {"layout": "[1, 2]"}


def test_exponent_written_without_dot_is_a_number() -> None:
    # PyYAML reads 1e-3 (no dot) as the string "1e-3".
    spec = yaml.safe_load("params:\n  C: {type: float, low: 1e-3, high: 1e3, log: true}\n")

    param = parse_space(spec).params[0]

    assert param.low == pytest.approx(1e-3)
    assert param.high == pytest.approx(1e3)


def test_type_is_inferred_from_choices() -> None:
    assert parse_space({"params": {"k": {"choices": ["rbf", "linear"]}}}).params[0].kind == "categorical"


def test_branch_parameters_never_share_a_name() -> None:
    spec = {
        "params": {
            "booster": {"choices": ["gbtree", "dart"]},
            "max_depth": {"type": "int", "low": 2, "high": 8, "when": {"booster": "gbtree"}},
            "max_depth_dart": {"type": "int", "low": 2, "high": 4, "when": {"booster": "dart"}, "arg": "max_depth"},
            "rate_drop": {"type": "float", "low": 0.0, "high": 0.3, "when": {"booster": "dart"}},
        }
    }

    space = parse_space(spec)

    assert space.names == ["booster", "gbtree_max_depth", "dart_max_depth_dart", "dart_rate_drop"]
    assert [p.argument for p in space] == ["booster", "max_depth", "max_depth", "rate_drop"]
    assert space.model_kwargs({"booster": "dart", "dart_max_depth_dart": 3, "dart_rate_drop": 0.1}) == {
        "booster": "dart",
        "max_depth": 3,
        "rate_drop": 0.1,
    }


def test_same_argument_in_overlapping_branches_rejected() -> None:
    spec = {
        "params": {
            "booster": {"choices": ["gbtree", "dart"]},
            "depth": {"type": "int", "low": 2, "high": 8, "arg": "max_depth"},
            "max_depth": {"type": "int", "low": 2, "high": 4, "when": {"booster": "dart"}},
        }
    }

    with pytest.raises(SpaceError, match=r"both set model argument 'max_depth' in the same configuration"):
        parse_space(spec)


def test_conditional_parameter_sampled_only_in_its_branch() -> None:
    space = builtin_space("xgboost", "binary", n_rows=500, n_features=10)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))

    for _ in range(20):
        trial = study.ask()
        values = space.suggest(trial)
        study.tell(trial, 0.0)
        has_dart_params = "dart_rate_drop" in values and "dart_skip_drop" in values
        assert has_dart_params == (values["booster"] == "dart")


def test_children_follow_their_parent_in_order() -> None:
    spec = {
        "params": {
            "rate_drop": {"type": "float", "low": 0.0, "high": 0.3, "when": {"booster": "dart"}},
            "booster": {"choices": ["gbtree", "dart"]},
        }
    }

    assert parse_space(spec).names == ["booster", "dart_rate_drop"]


def test_extends_builtin_overrides_removes_and_adds() -> None:
    base = builtin_space("xgboost", "binary", n_rows=1000, n_features=10)
    spec = {
        "extends": "builtin",
        "remove": ["reg_alpha"],
        "params": {
            "learning_rate": {"high": 0.1},
            "rate_drop": {"when": {"booster": "dart"}, "high": 0.2},
            "gamma": {"type": "float", "low": 1e-3, "high": 5.0, "log": True, "tier": 2},
        },
        "fixed": {"max_bin": 128},
    }

    space = parse_space(spec, base=base)

    learning_rate = space.get("learning_rate")
    assert learning_rate is not None
    assert learning_rate.high == 0.1
    assert learning_rate.log
    rate_drop = space.get("dart_rate_drop")
    assert rate_drop is not None
    assert rate_drop.high == 0.2
    assert rate_drop.argument == "rate_drop"
    assert "reg_alpha" not in space.names
    gamma = space.get("gamma")
    assert gamma is not None
    assert gamma.tier == 2
    assert space.fixed == {"tree_method": "hist", "max_bin": 128}


def test_remove_of_unknown_builtin_parameter_rejected() -> None:
    base = builtin_space("lightgbm", "binary", n_rows=1000, n_features=10)

    with pytest.raises(SpaceError, match=r"remove: 'max_depth' is not a built-in parameter"):
        parse_space({"extends": "builtin", "remove": ["max_depth"]}, base=base)


def test_fixed_argument_also_tuned_rejected() -> None:
    spec = {"params": {"C": {"type": "float", "low": 0.1, "high": 1}}, "fixed": {"C": 1.0}}

    with pytest.raises(SpaceError, match=r"model argument 'C' is also in fixed"):
        parse_space(spec)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("task", ["binary", "regression"])
def test_builtin_space_rebuilds_from_its_spec(model: str, task: str) -> None:
    space = builtin_space(model, task, n_rows=800, n_features=12)

    assert parse_space(json.loads(json.dumps(space.to_spec()))) == space


def test_builtin_booster_bounds_scale_with_rows() -> None:
    small = builtin_space("lightgbm", "binary", n_rows=100, n_features=3)
    large = builtin_space("lightgbm", "binary", n_rows=100_000, n_features=300)

    small_leaves, large_leaves = small.get("num_leaves"), large.get("num_leaves")
    assert small_leaves is not None
    assert large_leaves is not None
    assert small_leaves.high < large_leaves.high
    assert [p.name for p in small if p.tier == 1] == ["learning_rate", "num_leaves", "min_child_samples"]
    assert "n_estimators" not in small.names


def test_distributions_rebuild_the_same_parameters() -> None:
    space = builtin_space("xgboost", "binary", n_rows=1000, n_features=10)

    rebuilt = space_from_distributions(space.distributions())

    assert rebuilt.distributions() == space.distributions()


def test_stored_study_rebuilds_the_space(tmp_path: Path) -> None:
    space = parse_space(
        {
            "params": {
                "booster": {"choices": ["gbtree", "dart"]},
                "weights": {"choices": [None, {"0": 1, "1": 2}]},
                "depth": {"type": "int", "low": 2, "high": 10, "step": 2, "tier": 2},
                "rate_drop": {"type": "float", "low": 0.0, "high": 0.3, "when": {"booster": "dart"}},
                "eta": {"type": "float", "low": 1e-3, "high": 0.3, "log": True},
            }
        }
    )
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(study_name="round-trip", storage=storage, sampler=optuna.samplers.RandomSampler(seed=1))
    study.set_user_attr(SPEC_ATTR, space.to_spec())
    for _ in range(8):
        trial = study.ask()
        space.suggest(trial)
        study.tell(trial, 1.0)

    loaded = optuna.load_study(study_name="round-trip", storage=storage)

    assert space_from_study(loaded) == space
    distributions = space.distributions()
    for trial in loaded.get_trials():
        assert trial.distributions == {name: distributions[name] for name in trial.params}
        assert space.model_kwargs(trial.params)["weights"] in (None, {"0": 1, "1": 2})


def test_grid_size_counts_branches_separately() -> None:
    space = parse_space(
        {
            "params": {
                "booster": {"choices": ["gbtree", "dart"]},
                "depth": {"type": "int", "low": 2, "high": 4},
                "rate_drop": {"type": "float", "low": 0.0, "high": 0.3, "step": 0.1, "when": {"booster": "dart"}},
            }
        }
    )

    # gbtree: 3 depths; dart: 3 depths x 4 rates.
    assert space.grid_size() == 3 + 12


def test_grid_size_of_continuous_space_is_infinite() -> None:
    space = SearchSpace((Param("C", "float", 0.1, 1.0),))

    assert space.grid_size() == float("inf")


def test_space_file_and_space_section_both_set_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path / "space.yaml", {"params": {"C": {"type": "float", "low": 0.1, "high": 1}}})
    config = TuneConfig(model="logistic_regression", space=path, space_spec={"params": {}})

    with pytest.raises(ConfigError, match=r"both define a search space; keep only one of them"):
        resolve_space(config, "binary", n_rows=100, n_features=4)


def test_missing_space_file_rejected() -> None:
    with pytest.raises(ConfigError, match=r"search space file not found: space='nope.yaml'"):
        read_space_file("nope.yaml")


def test_json_space_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "space.json"
    path.write_text(json.dumps({"params": {"C": {"type": "float", "low": 0.01, "high": 10, "log": True}}}))
    config = TuneConfig(model="logistic_regression", space=str(path))

    space = resolve_space(config, "binary", n_rows=100, n_features=4)

    assert space.names == ["C"]


def test_config_file_space_section_is_used(tmp_path: Path) -> None:
    config_path = _write(
        tmp_path / "study.yaml",
        {"model": "logistic_regression", "space": {"params": {"C": {"choices": [0.1, 1.0]}}}},
    )

    config = TuneConfig.from_mapping({"config": config_path})
    space = resolve_space(config, "binary", n_rows=100, n_features=4)

    assert space.names == ["C"]
    assert space.params[0].choices == (0.1, 1.0)


@pytest.mark.slow
def test_user_space_with_branch_runs_end_to_end(tmp_path: Path, client: MlflowClient) -> None:
    space_path = _write(
        tmp_path / "space.yaml",
        {
            "params": {
                "C": {"type": "float", "low": 0.01, "high": 10.0, "log": True},
                "solver": {"choices": ["lbfgs", "liblinear"]},
                "intercept_scaling": {
                    "type": "float", "low": 0.1, "high": 10.0, "log": True, "when": {"solver": "liblinear"},
                },
            },
            "fixed": {"max_iter": 500},
        },
    )
    argv = ["tune", "--space", space_path, "--n_trials", "6", "--strategy", "random", "--study_name", "branch"]
    for key, value in FAST.items():
        argv += [f"--{key}", str(value)]

    assert main(argv) == 0

    runs = client.search_runs(["0"], filter_string="tags.`mlflow_hpo.study_name` = 'branch'")
    parents = [run for run in runs if TAG_TRIAL not in run.data.tags]
    assert len(parents) == 1
    children = [run for run in runs if run.data.tags.get(TAG_PARENT) == parents[0].info.run_id]
    assert len(children) == 6
    for run in children:
        params = run.data.params
        assert set(params) == {"C", "solver", "liblinear_intercept_scaling"}
        assert (params["liblinear_intercept_scaling"] == "inactive") == (params["solver"] == "lbfgs")


@pytest.mark.slow
def test_resume_with_edited_choices_fails_before_any_trial(tmp_path: Path, client: MlflowClient) -> None:
    first = {"params": {"C": {"type": "float", "low": 0.1, "high": 10, "log": True}, "class_weight": {"choices": [None, "balanced"]}}}
    edited = {"params": {"C": {"type": "float", "low": 0.1, "high": 10, "log": True}, "class_weight": {"choices": ["balanced"]}}}
    tune(TuneConfig(space=_write(tmp_path / "a.yaml", first), study_name="edited", n_trials=2, **FAST))

    with pytest.raises(
        ConfigError,
        match=r"study 'edited' was created with another search space \(class_weight: choices \[None, 'balanced'\] "
        r"-> choices \['balanced'\]\); use a new study_name such as edited-v2",
    ):
        tune(TuneConfig(space=_write(tmp_path / "b.yaml", edited), study_name="edited", n_trials=4, **FAST))

    storage = open_storage(storage_url(mlflow.get_tracking_uri()))
    assert len(optuna.load_study(study_name="edited", storage=storage).trials) == 2
    assert client.search_runs(["0"], filter_string="attributes.status = 'RUNNING'") == []


def test_stored_signature_matches_space() -> None:
    space = builtin_space("logistic_regression", "binary", n_rows=100, n_features=4)

    signature = space_signature(space)

    assert set(signature) == {"C", "class_weight"}
    assert optuna.distributions.json_to_distribution(signature["C"]) == space.distributions()["C"]


def test_free_study_name_skips_taken_names() -> None:
    storage = optuna.storages.InMemoryStorage()
    for name in ("cancer", "cancer-v2", "cancer-v3"):
        optuna.create_study(study_name=name, storage=storage)

    assert free_study_name(storage, "cancer") == "cancer-v4"
    assert free_study_name(storage, "cancer-v3") == "cancer-v4"
    assert free_study_name(storage, "wine") == "wine-v2"
