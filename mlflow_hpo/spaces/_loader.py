"""Search-space files: reading YAML or JSON, merging with a built-in space, validation.

A space file looks like this::

    extends: builtin            # optional: start from the model's built-in space
    remove: [reg_alpha]         # optional, with extends: drop built-in parameters
    params:
      learning_rate: {type: float, low: 0.01, high: 0.3, log: true, tier: 1}
      num_leaves: {type: int, low: 8, high: 128, step: 8}
      booster: {choices: [gbtree, dart]}
      rate_drop: {type: float, low: 0.0, high: 0.3, when: {booster: dart}}
    fixed:
      subsample_freq: 1

``type`` defaults to ``categorical`` when ``choices`` is given. A parameter
with ``when`` exists only for the listed values of its categorical parent,
and its study name is prefixed with those values (``dart_rate_drop``), so
parameters of two branches never share a name. The model receives it under
``arg``, which defaults to the key without that prefix. With ``extends``, an
entry whose study name matches a built-in parameter changes only the fields
it gives.

Every problem of a file is collected and reported in one `SpaceError`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mlflow_hpo._errors import ConfigError
from mlflow_hpo.spaces._model import KINDS, Choice, Condition, Param, SearchSpace, encode_choice

_TOP_KEYS = ("extends", "remove", "params", "fixed")
_PARAM_KEYS = ("type", "low", "high", "log", "step", "choices", "when", "tier", "arg")


class SpaceError(ConfigError):
    """An invalid search space; ``problems`` contains one message per problem."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.problems = problems
        numbered = " ".join(f"[{i}] {problem}" for i, problem in enumerate(problems, start=1))
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"invalid search space {source} ({len(problems)} {noun}): {numbered}")


def read_space_file(path: str) -> dict[str, Any]:
    """Read a YAML or JSON space file into a mapping."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"search space file not found: space={path!r}; pass the path of a YAML or JSON file.")
    text = file.read_text(encoding="utf-8")
    try:
        raw = json.loads(text) if file.suffix.lower() == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        first_line = str(exc).splitlines()[0]
        raise ConfigError(f"search space file {path!r} cannot be parsed ({first_line}); fix the syntax.") from exc
    if not isinstance(raw, dict):
        raise ConfigError(
            f"search space file {path!r} must contain a mapping with a 'params:' section, "
            f"got {type(raw).__name__}."
        )
    return raw


def branch_prefix(values: list[Any]) -> str:
    """Return the name prefix of parameters that exist only for ``values`` of their parent."""
    parts = [re.sub(r"[^0-9A-Za-z]+", "_", str(value)).strip("_") or "none" for value in values]
    return "_".join(parts) + "_"


def parse_space(spec: Mapping[str, Any], *, base: SearchSpace | None = None, source: str = "") -> SearchSpace:
    """Build a validated space from a space-file mapping.

    Args:
        spec: The mapping read from a file or from the ``space:`` section of a config.
        base: The model's built-in space, used when the spec says ``extends: builtin``.
        source: How the spec is named in error messages, e.g. ``in 'space.yaml'``.

    Raises:
        SpaceError: With one message per problem found.
    """
    problems: list[str] = []
    for key in spec:
        if key not in _TOP_KEYS:
            problems.append(f"unknown key {key!r}; use one of: {', '.join(_TOP_KEYS)}.")
    entries, fixed = _merge_with_base(spec, base, problems)

    params: list[Param] = []
    for key, entry in entries.items():
        param = _parse_param(key, entry, problems)
        if param is not None:
            params.append(param)
    if not isinstance(fixed, Mapping):
        problems.append(f"fixed must be a mapping of model arguments to values, got {type(fixed).__name__}.")
        fixed = {}
    ordered = _check_relations(params, dict(fixed), problems)
    if problems:
        raise SpaceError(source or "in the space: section", problems)
    return SearchSpace(tuple(ordered), dict(fixed))


def _merge_with_base(
    spec: Mapping[str, Any], base: SearchSpace | None, problems: list[str]
) -> tuple[dict[str, Any], Any]:
    """Return the parameter entries keyed by study name, and the fixed arguments."""
    extends = spec.get("extends")
    user_params = spec.get("params", {})
    if user_params is None:
        user_params = {}
    if not isinstance(user_params, Mapping):
        problems.append(f"params must be a mapping of parameter names to ranges, got {type(user_params).__name__}.")
        user_params = {}
    if extends is not None and extends != "builtin":
        problems.append(f"extends must be 'builtin', got extends={extends!r}; remove it to write a space from scratch.")
    use_base = extends == "builtin" and base is not None

    entries: dict[str, Any] = {}
    fixed: Any = spec.get("fixed", {}) or {}
    if use_base:
        assert base is not None
        entries = {p.name: p.to_spec() for p in base.params}
        fixed = {**base.fixed, **fixed} if isinstance(fixed, Mapping) else fixed
    remove = spec.get("remove", []) or []
    if remove and not use_base:
        problems.append("remove only applies with extends: builtin; add extends: builtin or drop remove.")
    elif not isinstance(remove, list):
        problems.append(f"remove must be a list of parameter names, got {remove!r}.")
    else:
        for name in remove:
            if name not in entries:
                problems.append(f"remove: {name!r} is not a built-in parameter; choose from: {', '.join(entries)}.")
            entries.pop(name, None)

    for key, entry in user_params.items():
        name = _study_name(str(key), entry)
        if name in entries and isinstance(entry, Mapping):
            entries[name] = {**entries[name], **entry}
        elif name in entries:
            entries[name] = entry
        else:
            entries[name] = dict(entry) if isinstance(entry, Mapping) else entry
            if isinstance(entry, Mapping) and "when" in entry and "arg" not in entry:
                entries[name]["arg"] = _strip_prefix(str(key), entry)
    return entries, fixed


def _when_values(entry: Any) -> list[Any] | None:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("when"), Mapping) or len(entry["when"]) != 1:
        return None
    values = next(iter(entry["when"].values()))
    return list(values) if isinstance(values, list) else [values]


def _study_name(key: str, entry: Any) -> str:
    values = _when_values(entry)
    if values is None:
        return key
    prefix = branch_prefix([encode_choice(v) for v in values])
    return key if key.startswith(prefix) else prefix + key


def _strip_prefix(key: str, entry: Any) -> str:
    values = _when_values(entry)
    if values is None:
        return key
    prefix = branch_prefix([encode_choice(v) for v in values])
    return key[len(prefix) :] if key.startswith(prefix) else key


def _number(value: Any) -> float | None:
    # PyYAML reads "1e-3" (no dot) as a string, so numeric strings are accepted.
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _parse_param(name: str, entry: Any, problems: list[str]) -> Param | None:
    where = f"params.{name}"
    if not isinstance(entry, Mapping):
        problems.append(f"{where} must be a mapping such as {{type: float, low: 0.01, high: 1}}, got {entry!r}.")
        return None
    before = len(problems)
    for key in entry:
        if key not in _PARAM_KEYS:
            problems.append(f"{where}: unknown key {key!r}; use one of: {', '.join(_PARAM_KEYS)}.")
    kind = entry.get("type", "categorical" if "choices" in entry else None)
    if kind not in KINDS:
        problems.append(f"{where}: type must be one of {', '.join(KINDS)}, got type={kind!r}.")
        return None
    tier = entry.get("tier", 1)
    if isinstance(tier, bool) or not isinstance(tier, int) or tier < 1:
        problems.append(f"{where}: tier must be a whole number of at least 1, got tier={tier!r}; use 1 for the most impactful.")
    arg = entry.get("arg", name)
    if not isinstance(arg, str) or not arg:
        problems.append(f"{where}: arg must be the model's keyword argument name, got arg={arg!r}.")
    condition = _parse_condition(where, entry.get("when"), problems)
    if kind == "categorical":
        fields = _parse_choices(where, entry, problems)
    else:
        fields = _parse_range(where, kind, entry, problems)
    if fields is None or len(problems) > before:
        return None
    return Param(name, kind, condition=condition, tier=int(tier), model_arg=arg if arg != name else "", **fields)


def _parse_choices(where: str, entry: Mapping[str, Any], problems: list[str]) -> dict[str, Any] | None:
    for key in ("low", "high", "log", "step"):
        if key in entry:
            problems.append(f"{where}: {key} does not apply to a categorical parameter; remove it or set type: float.")
    choices = entry.get("choices")
    if not isinstance(choices, list) or not choices:
        problems.append(f"{where}: choices must be a non-empty list, got choices={choices!r}.")
        return None
    stored: list[Choice] = []
    encoded: list[str] = []
    for choice in choices:
        try:
            stored_key = encode_choice(choice)
        except TypeError:
            problems.append(f"{where}: choice {choice!r} cannot be stored; use numbers, strings, null, lists or mappings.")
            continue
        if stored_key in stored:
            problems.append(f"{where}: choice {choice!r} is listed twice; list each choice once.")
            continue
        if isinstance(stored_key, str) and not isinstance(choice, str):
            encoded.append(stored_key)
        stored.append(stored_key)
    return {"choices": tuple(stored), "encoded_choices": tuple(encoded)}


def _parse_range(where: str, kind: str, entry: Mapping[str, Any], problems: list[str]) -> dict[str, Any] | None:
    if "choices" in entry:
        problems.append(f"{where}: choices does not apply to type {kind}; remove choices or type.")
    low, high = _number(entry.get("low")), _number(entry.get("high"))
    step = None if entry.get("step") is None else _number(entry.get("step"))
    log = entry.get("log", False)
    ok = True
    for key, value in (("low", low), ("high", high)):
        if value is None or not math.isfinite(value):
            problems.append(f"{where}: {key} must be a finite number, got {key}={entry.get(key)!r}.")
            ok = False
    if not isinstance(log, bool):
        problems.append(f"{where}: log must be true or false, got log={log!r}.")
        ok = False
    if entry.get("step") is not None and (step is None or not step > 0):
        problems.append(f"{where}: step must be a positive number, got step={entry.get('step')!r}.")
        ok = False
    if not ok:
        return None
    assert low is not None and high is not None
    _check_range(where, kind, low, high, step, log, problems)
    if kind == "int":
        return {"low": int(low), "high": int(high), "log": log, "step": None if step is None else int(step)}
    return {"low": low, "high": high, "log": log, "step": step}


def _check_range(
    where: str, kind: str, low: float, high: float, step: float | None, log: bool, problems: list[str]
) -> None:
    if low >= high:
        problems.append(f"{where}: low must be below high, got low={low:g}, high={high:g}; swap them or widen the range.")
    if log and low <= 0:
        problems.append(
            f"{where}: a log range must start above 0, got low={low:g}; use a small positive low such as {_positive_low(high):g}."
        )
    if log and step is not None:
        problems.append(f"{where}: step cannot be combined with log: true; drop step, or drop log for an evenly spaced grid.")
    if kind == "int":
        for key, value in (("low", low), ("high", high), ("step", step)):
            if value is not None and not float(value).is_integer():
                problems.append(f"{where}: {key} of an int parameter must be a whole number, got {key}={value:g}.")
    if step is not None and not log and low < high:
        count = (high - low) / step
        if abs(count - round(count)) > 1e-9 * max(1.0, abs(count)):
            problems.append(
                f"{where}: high - low = {high - low:g} is not a multiple of step={step:g}; "
                f"use high={low + math.floor(count) * step:g}."
            )


def _positive_low(high: float) -> float:
    return 10.0 ** math.floor(math.log10(high) - 4) if high > 0 else 1e-6


def _parse_condition(where: str, when: Any, problems: list[str]) -> Condition | None:
    if when is None:
        return None
    if not isinstance(when, Mapping) or len(when) != 1:
        problems.append(f"{where}: when must name one parent parameter, e.g. when: {{booster: dart}}, got when={when!r}.")
        return None
    parent, values = next(iter(when.items()))
    values = values if isinstance(values, list) else [values]
    return Condition(str(parent), tuple(encode_choice(v) for v in values))


def _check_relations(params: list[Param], fixed: dict[str, Any], problems: list[str]) -> list[Param]:
    """Check names, conditions and arguments across parameters; return them with parents first."""
    by_name: dict[str, Param] = {}
    for param in params:
        if param.name in by_name:
            problems.append(f"params.{param.name}: the name is used twice; rename one of them.")
        by_name[param.name] = param
    for param in params:
        if param.condition is None:
            continue
        parent = by_name.get(param.condition.parent)
        if parent is None:
            problems.append(
                f"params.{param.name}: when refers to {param.condition.parent!r}, which is not a parameter of the space."
            )
        elif parent.kind != "categorical":
            problems.append(f"params.{param.name}: when needs a categorical parent, but {parent.name!r} is {parent.kind}.")
        else:
            unknown = [v for v in param.condition.values if v not in parent.choices]
            if unknown:
                problems.append(
                    f"params.{param.name}: when values {unknown} are not choices of {parent.name!r} "
                    f"({list(parent.choices)})."
                )
    _check_arguments(params, fixed, problems)
    return _parents_first(params, by_name, problems)


def _check_arguments(params: list[Param], fixed: dict[str, Any], problems: list[str]) -> None:
    """Two parameters may pass the same model argument only from disjoint branches of one parent."""
    for i, first in enumerate(params):
        if first.argument in fixed:
            problems.append(
                f"params.{first.name}: model argument {first.argument!r} is also in fixed; remove one of them."
            )
        for second in params[i + 1 :]:
            if first.argument != second.argument:
                continue
            a, b = first.condition, second.condition
            if a is None or b is None or a.parent != b.parent or set(a.values) & set(b.values):
                problems.append(
                    f"params.{first.name} and params.{second.name} both set model argument {first.argument!r} "
                    "in the same configuration; put them in different branches of one parent."
                )


def _parents_first(params: list[Param], by_name: dict[str, Param], problems: list[str]) -> list[Param]:
    ordered: list[Param] = []
    placed: set[str] = set()
    pending = list(params)
    while pending:
        ready = [p for p in pending if p.condition is None or p.condition.parent in placed or p.condition.parent not in by_name]
        if not ready:
            names = ", ".join(p.name for p in pending)
            problems.append(f"conditions form a cycle among {names}; a parameter cannot depend on itself.")
            return ordered + pending
        for param in ready:
            ordered.append(param)
            placed.add(param.name)
        pending = [p for p in pending if p.name not in placed]
    return ordered
