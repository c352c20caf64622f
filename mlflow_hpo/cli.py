"""Command line: ``mlflow-hpo tune`` and the MLproject entry points.

The CLI only parses arguments, builds a `TuneConfig` and calls `tune`.
Invalid input ends with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence

from mlflow_hpo._errors import ConfigError, HpoError
from mlflow_hpo._promote_cli import add_promote_arguments, run_promote
from mlflow_hpo.config import TuneConfig
from mlflow_hpo.storage import redact_url

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1

_HELP = {
    "data": "sklearn:<name> or a CSV/Parquet path (default sklearn:breast_cancer)",
    "target": "target column (default: the dataset's target, or a file's last column)",
    "task": "auto, binary, multiclass or regression",
    "model": "model family, e.g. lightgbm, xgboost, random_forest, logistic_regression",
    "metric": "scikit-learn scorer name, or auto; comma-separated names (e.g. roc_auc,latency) make a multi-objective study",
    "strategy": "auto, grid, random or tpe",
    "n_trials": "number of finished trials the study should hold",
    "timeout": "time budget of the search in seconds (0: no limit)",
    "cv": "auto, stratified, kfold, group, time_series or repeated",
    "n_folds": "number of cross-validation folds",
    "test_size": "fraction of rows held out for the final test",
    "time_column": "column that orders rows in time",
    "group_column": "column whose groups must not span folds",
    "gap": "rows left out between training and validation rows of each time-series split (default 0)",
    "nested_cv": "true runs the search inside each outer fold and reports the outer-fold scores",
    "pruner": "auto, median, hyperband, wilcoxon or none",
    "seed": "seed of every random source",
    "study_name": "Optuna study name; reuse it to resume a study",
    "register_model": "registered model name; auto derives one, empty skips",
    "config": "YAML file with options and an optional space: section",
    "space": "YAML or JSON search-space file (may extend the built-in space)",
    "staged": "true: tune tier-1 parameters first, then the rest with their winners fixed",
    "warm_start": "name of an earlier study in the same storage whose best configurations run first",
    "workers": "local worker processes that run the trials (default 1: this process)",
    "retry_failed": "true re-runs the parameters of trials whose process died",
    "importance": "hyperparameter importance evaluator: ped_anova, fanova or none",
    "n_jobs": "trials run in parallel threads of this process (default 1)",
    "promote_margin": "how much worse than the champion, in metric units, a new version may score and still take it (default 0)",
    "early_stopping_rounds": "boosters stop when the inner validation metric has not improved for this many rounds (default 50)",
    "max_boost_rounds": "cap on boosting rounds; early stopping picks the number below it (default 2000)",
    "experiment_name": "MLflow experiment of the parent run when tune opens one (default: the active or default experiment)",
    "select": "multi-objective rule for the model to register: knee, max:<objective> or min:<objective>, then optional |<objective><op><number> bounds",
}


def _add_tune_arguments(parser: argparse.ArgumentParser) -> None:
    for field in dataclasses.fields(TuneConfig):
        if field.name == "space_spec":
            continue
        help_text = _HELP.get(field.name, field.name.replace("_", " "))
        parser.add_argument(f"--{field.name}", dest=field.name, default=None, help=help_text)
    parser.add_argument("--config", dest="config", default=None, help=_HELP["config"])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlflow-hpo", description="Tune a model with Optuna and track it in MLflow.")
    sub = parser.add_subparsers(dest="command", required=True)
    tune_parser = sub.add_parser("tune", help="run a tuning study")
    _add_tune_arguments(tune_parser)
    worker_parser = sub.add_parser("worker", help="join a stored study and run its trials")
    worker_parser.add_argument("--study_name", required=True, help="name of a study that `tune` created")
    promote_parser = sub.add_parser("promote", help="run the champion gate for a registered version, or force it")
    add_promote_arguments(promote_parser)
    report_parser = sub.add_parser("report", help="rebuild the report artifacts of a stored study")
    report_parser.add_argument("--study-name", required=True, help="Optuna study name")
    destination = report_parser.add_mutually_exclusive_group(required=True)
    destination.add_argument("--run-id", default="", help="MLflow run that receives the artifacts")
    destination.add_argument("--output", default="", help="folder that receives the artifacts")
    return parser


def config_from_args(args: argparse.Namespace) -> TuneConfig:
    values = {k: v for k, v in vars(args).items() if k != "command" and v is not None}
    return TuneConfig.from_mapping(values)


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from mlflow_hpo.storage import RedactingFilter

    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _fail_outer_run() -> None:
    """Mark the run that ``mlflow run`` opened as FAILED, so none is left RUNNING."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient().set_terminated(run_id, status="FAILED")
    except Exception:  # noqa: BLE001 - best effort while exiting on an error
        logging.getLogger(__name__).warning("Could not mark run %s as FAILED.", run_id)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging()
    try:
        if args.command == "tune":
            from mlflow_hpo.study import tune

            result = tune(config_from_args(args))
            print(
                f"study {result.study_name}: best CV {result.metric} {result.best_cv_mean:.6g}, "
                f"held-out {result.test_score:.6g}, parent run {result.parent_run_id}"
                + (f", registered {result.registered_model} v{result.registered_version}" if result.registered_version else "")
            )
        if args.command == "worker":
            from mlflow_hpo.workers import join_study

            print(f"worker of study {args.study_name}: ran {join_study(args.study_name)} trials")
        if args.command == "promote":
            print(run_promote(args))
        if args.command == "report":
            from mlflow_hpo.report import regenerate_report

            print(f"report of study {args.study_name} written to {regenerate_report(args.study_name, run_id=args.run_id, output=args.output)}")
        return 0
    except ConfigError as exc:
        _fail_outer_run()
        print(f"mlflow-hpo: error: {redact_url(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except HpoError as exc:
        _fail_outer_run()
        print(f"mlflow-hpo: error: {redact_url(str(exc))}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
