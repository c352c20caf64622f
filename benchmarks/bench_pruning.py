"""Pruning: training time and best CV score with and without the median pruner.

Both variants tune LightGBM with the same seeded TPE sampler, the same
search space and the same 3-fold stratified cross-validation on a synthetic
binary table (scikit-learn's make_classification, 25,000 rows, 20% held
out, so 20,000 training rows), with at most 300 boosting rounds and a
patience of 30. Training time is the CPU time of this process spent inside
the cross-validation of every trial, so tracking and sampling costs stay
out and other load on a shared machine counts less than in wall time. The
target: pruned training time at most half of unpruned, and the pruned best
CV score within one fold standard deviation of the unpruned one.

Usage::

    python -m benchmarks.bench_pruning                   # 100 trials per variant
    python -m benchmarks.bench_pruning --variant median  # one variant only
    python -m benchmarks.bench_pruning --quick           # tiny budget, for tests
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from sklearn.datasets import make_classification

from mlflow_hpo import TuneConfig
from mlflow_hpo.pruning import make_pruner, pruner_label
from mlflow_hpo.study import Job, evaluate, plan

SEED = 42
TARGET_TIME_RATIO = 0.5


def write_table(folder: Path, n_rows: int) -> Path:
    """Write a seeded, noisy binary table of ``n_rows`` rows and return its path."""
    X, y = make_classification(
        n_samples=n_rows,
        n_features=20,
        n_informative=8,
        n_redundant=4,
        flip_y=0.05,
        class_sep=0.8,
        random_state=SEED,
    )
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    frame["label"] = y
    path = folder / "pruning_bench.parquet"
    frame.to_parquet(path, index=False)
    return path


def _single_threaded(job: Job) -> Job:
    # On a machine shared with other jobs, LightGBM's OpenMP threads spin
    # while they wait for a core; one thread per fit measured about 20 times
    # less CPU time there than two (28 s against 1.3 s for one 300-round fit
    # on 11,000 rows, measured with lightgbm 4.7 on the 2-core test machine).
    job.context = dataclasses.replace(job.context, n_threads=1)
    return job


def run_variant(job: Job, n_trials: int) -> dict[str, Any]:
    """Run ``n_trials`` trials in memory and return time, best score and trial counts."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=SEED, multivariate=True),
        pruner=make_pruner(job.config, job.adapter, job.strategy, job.splitter),
    )
    training_seconds = 0.0

    def objective(trial: optuna.Trial) -> float:
        nonlocal training_seconds
        kwargs = job.space.model_kwargs(job.space.suggest(trial))
        started = time.process_time()
        try:
            result = evaluate(job, trial, kwargs)
        finally:
            training_seconds += time.process_time() - started
        trial.set_user_attr("cv_std", result.std)
        return result.mean

    def progress(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        print(f"{job.config.pruner} trial {trial.number} {trial.state.name} cpu {training_seconds:.0f}s", flush=True)

    study.optimize(objective, n_trials=n_trials, callbacks=[progress])
    states = [t.state.name for t in study.trials]
    return {
        "pruner": pruner_label(job),
        "training_seconds": training_seconds,
        "best_cv": study.best_value,
        "best_cv_fold_std": study.best_trial.user_attrs["cv_std"],
        "complete": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget (1,000 rows, 6 trials, 30 rounds)")
    parser.add_argument("--variant", choices=("both", "none", "median"), default="both", help="pruner to run")
    parser.add_argument("--output", default="", help="also write the results as JSON to this path")
    args = parser.parse_args(argv)
    n_rows, n_trials, max_rounds = (1_000, 6, 30) if args.quick else (25_000, 100, 300)
    variants = ("none", "median") if args.variant == "both" else (args.variant,)

    with tempfile.TemporaryDirectory() as folder:
        data = write_table(Path(folder), n_rows)
        base = TuneConfig(
            data=str(data),
            target="label",
            model="lightgbm",
            metric="roc_auc",
            strategy="tpe",
            cv="stratified",
            n_folds=3,
            n_trials=n_trials,
            seed=SEED,
            early_stopping_rounds=30,
            max_boost_rounds=max_rounds,
            register_model="",
        )
        results = {name: run_variant(_single_threaded(plan(base.replace(pruner=name))), n_trials) for name in variants}
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2, default=float) + "\n")
    return summarize(results, n_rows, n_trials) if len(results) == 2 else results


def summarize(results: dict[str, Any], n_rows: int, n_trials: int) -> dict[str, Any]:
    """Print the comparison table of both variants and return the figures."""
    unpruned, pruned = results["none"], results["median"]
    ratio = pruned["training_seconds"] / unpruned["training_seconds"]
    score_gap = unpruned["best_cv"] - pruned["best_cv"]
    summary = {
        "rows": n_rows,
        "trials": n_trials,
        "variants": results,
        "time_ratio": ratio,
        "best_cv_gap": score_gap,
        "target_met": bool(ratio <= TARGET_TIME_RATIO and score_gap <= unpruned["best_cv_fold_std"]),
    }
    print("| variant | training CPU time (s) | best CV roc_auc | fold std of best | complete | pruned |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, row in results.items():
        print(
            f"| {name} | {row['training_seconds']:.1f} | {row['best_cv']:.5f} | "
            f"{row['best_cv_fold_std']:.5f} | {row['complete']} | {row['pruned']} |"
        )
    print(f"\ntime ratio pruned/unpruned: {ratio:.3f}; best CV unpruned minus pruned: {score_gap:.5f}")
    print(f"target met: {summary['target_met']}")
    return summary


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
