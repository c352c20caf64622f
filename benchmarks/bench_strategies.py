"""Search strategies: best CV score of TPE after 50 trials versus random search after 100.

Both samplers search mlflow_hpo's built-in LightGBM space with the same
cross-validation (``mlflow_hpo.study.plan`` builds the job, and every trial
is scored by ``mlflow_hpo.study.evaluate``, the function that scores each
trial of ``tune``). The studies run in memory without MLflow, so the figures
measure the samplers, not the tracking overhead. TPE is multivariate and
seeded like ``strategy=tpe``; random search is Optuna's RandomSampler.

Usage::

    python -m benchmarks.bench_strategies            # 3 datasets x 5 seeds
    python -m benchmarks.bench_strategies --quick    # tiny budget, for the tests
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from benchmarks._common import fmt, machine_facts, penguins_csv, quiet_logs, tracking_store
from mlflow_hpo import TuneConfig
from mlflow_hpo.study import Job, evaluate, plan

SEEDS = (0, 1, 2, 3, 4)
TPE_TRIALS = 50
RANDOM_TRIALS = 100
N_FOLDS = 3
# The cap is lower than the tuner's default of 2000 rounds, so the 2,250
# trials of a full run fit in minutes on a shared 2-core machine. Early
# stopping ends most fits before the cap, except at the lowest learning rates.
MAX_BOOST_ROUNDS = 150
EARLY_STOPPING_ROUNDS = 30


# name, description, data spec (or a function that writes a CSV into a folder), target
DATASETS: list[tuple[str, str, str | Callable[[Path], str], str]] = [
    ("breast_cancer", "binary, 569 rows, ROC AUC", "sklearn:breast_cancer", ""),
    ("diabetes", "regression, 442 rows, -RMSE", "sklearn:diabetes", ""),
    ("penguins", "regression of body mass, 342 rows, -RMSE", penguins_csv, "body_mass_g"),
]


@dataclasses.dataclass(frozen=True)
class Budget:
    seeds: tuple[int, ...]
    tpe_trials: int
    random_trials: int
    max_boost_rounds: int


FULL = Budget(SEEDS, TPE_TRIALS, RANDOM_TRIALS, MAX_BOOST_ROUNDS)
QUICK = Budget((0,), 3, 5, 20)


def _job(data: str, target: str, budget: Budget) -> Job:
    cv = "stratified" if data == "sklearn:breast_cancer" else "kfold"
    config = TuneConfig(
        data=data,
        target=target,
        model="lightgbm",
        cv=cv,
        n_folds=N_FOLDS,
        max_boost_rounds=budget.max_boost_rounds,
        early_stopping_rounds=EARLY_STOPPING_ROUNDS,
        register_model="",
    )
    job = plan(config)
    # One thread per fit: the machine's cores are shared with other jobs.
    return dataclasses.replace(job, context=dataclasses.replace(job.context, n_threads=1))


def _best_curve(job: Job, sampler: optuna.samplers.BaseSampler, n_trials: int) -> tuple[list[float], float]:
    """Run ``n_trials`` trials; return the best-so-far CV score after each trial and the wall time."""

    def objective(trial: optuna.Trial) -> float:
        kwargs = job.space.model_kwargs(job.space.suggest(trial))
        return evaluate(job, None, kwargs).mean

    study = optuna.create_study(direction="maximize", sampler=sampler)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        study.optimize(objective, n_trials=n_trials)
    seconds = time.perf_counter() - started
    best, curve = float("-inf"), []
    for trial in study.trials:
        if trial.value is not None:
            best = max(best, trial.value)
        curve.append(best)
    return curve, seconds


def run(budget: Budget, folder: Path) -> dict[str, Any]:
    """Run both samplers on every dataset and seed; return the per-seed results."""
    results: dict[str, Any] = {"budget": dataclasses.asdict(budget), "datasets": {}}
    for name, description, data, target in DATASETS:
        with tracking_store(folder / name):
            spec = data(folder / name) if callable(data) else data
            job = _job(spec, target, budget)
            rows = []
            for seed in budget.seeds:
                tpe_sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True)
                tpe, tpe_seconds = _best_curve(job, tpe_sampler, budget.tpe_trials)
                random, random_seconds = _best_curve(job, optuna.samplers.RandomSampler(seed=seed), budget.random_trials)
                print(
                    f"{name} seed {seed}: TPE {tpe[-1]:.5g} in {tpe_seconds:.0f} s, "
                    f"random {random[-1]:.5g} in {random_seconds:.0f} s",
                    flush=True,
                )
                rows.append(
                    {
                        "seed": seed,
                        "tpe_best": tpe[-1],
                        "random_best": random[-1],
                        "random_best_at_tpe_trials": random[min(budget.tpe_trials, len(random)) - 1],
                        "tpe_seconds": tpe_seconds,
                        "random_seconds": random_seconds,
                    }
                )
        results["datasets"][name] = {"description": description, "seeds": rows}
    return results


def _mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{fmt(statistics.mean(values), 4)} ± {fmt(spread, 2)}"


def markdown_table(results: dict[str, Any]) -> str:
    """Return the results as a Markdown table, one row per dataset."""
    budget = results["budget"]
    tpe_n, random_n = budget["tpe_trials"], budget["random_trials"]
    lines = [
        f"| dataset | TPE, {tpe_n} trials | random, {random_n} trials | random, first {tpe_n} trials "
        f"| seeds where TPE >= random | TPE s / random s (mean) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in results["datasets"].items():
        seeds = entry["seeds"]
        tpe = [row["tpe_best"] for row in seeds]
        random = [row["random_best"] for row in seeds]
        random_early = [row["random_best_at_tpe_trials"] for row in seeds]
        wins = sum(1 for a, b in zip(tpe, random, strict=True) if a >= b)
        tpe_seconds = statistics.mean(row["tpe_seconds"] for row in seeds)
        random_seconds = statistics.mean(row["random_seconds"] for row in seeds)
        lines.append(
            f"| {name} ({entry['description']}) | {_mean_std(tpe)} | {_mean_std(random)} | "
            f"{_mean_std(random_early)} | {wins} of {len(seeds)} | {tpe_seconds:.0f} / {random_seconds:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 3 TPE and 5 random trials, 20 rounds")
    parser.add_argument(
        "--output", default="benchmarks/results/strategies", help="folder for strategies.md and strategies.json"
    )
    args = parser.parse_args(argv)
    quiet_logs()
    budget = QUICK if args.quick else FULL
    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        results = run(budget, Path(scratch))
        results["seconds"] = time.perf_counter() - started
    results["machine"] = machine_facts()
    table = markdown_table(results)
    (output / "strategies.md").write_text(table, encoding="utf-8")
    (output / "strategies.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(table)
    print(f"total {results['seconds']:.0f} s; results in {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
