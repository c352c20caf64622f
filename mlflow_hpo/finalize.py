"""After the search: refit the winner, score it once on held-out rows, report, register."""

from __future__ import annotations

import collections
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from mlflow_hpo._errors import HpoError
from mlflow_hpo.cv import CVResult, refit_rounds
from mlflow_hpo.multi_objective import choose_trial
from mlflow_hpo.nested import nested_cross_validate
from mlflow_hpo.report import log_report_outputs, write_study_report
from mlflow_hpo.runs import ParentRun
from mlflow_hpo.serving import TunedModel

if TYPE_CHECKING:
    from mlflow_hpo.study import Job, TuneResult

_logger = logging.getLogger(__name__)


def finalize(
    study: optuna.Study, job: Job, parent: ParentRun, client: MlflowClient, *, wall_time: float
) -> TuneResult:
    """Refit the best trial on all training rows, score it on the test rows and log everything."""
    from mlflow_hpo.study import TuneResult

    counts = collections.Counter(t.state.name for t in study.get_trials(deepcopy=False))
    try:
        selection = choose_trial(study, job)
    except ValueError:
        raise HpoError(
            f"study {job.study_name!r} has no completed trial ({dict(counts)}); "
            "see the failed trials' fail_reason tags in MLflow."
        ) from None

    best = selection.trial
    kwargs = job.space.model_kwargs(best.params)
    cv_result = CVResult.of_trial(best)
    n_rounds, rounds_rule = refit_rounds(cv_result, len(job.dataset.X_train))
    estimator = job.adapter.fit_final(kwargs, job.context, job.dataset.X_train, job.dataset.y_train, n_rounds)
    model = TunedModel(job.dataset.preprocessor, estimator, job.dataset.classes)
    test_score = float(job.objective.scorer(estimator, job.dataset.X_test, job.dataset.y_test))
    _logger.info(
        "Best trial %d: CV %s %.6g (std %.3g); held-out test %.6g.",
        best.number, job.objective.name, best.values[0], cv_result.std, test_score,
    )

    name = job.objective.name
    summary_metrics = {
        f"best_cv_{name}_mean": float(best.values[0]),
        f"best_cv_{name}_std": cv_result.std,
        f"test_{name}": test_score,
        f"cv_minus_test_{name}": float(best.values[0]) - test_score,
        "wall_time_s": wall_time,
        "best_trial_number": float(best.number),
        **{f"n_trials_{state.lower()}": float(n) for state, n in counts.items()},
    }
    if n_rounds is not None:
        summary_metrics["refit_n_estimators"] = float(n_rounds)
    nested = nested_cross_validate(job) if job.config.nested_cv else None
    if nested is not None:
        summary_metrics.update(nested.metrics(name))
    client.log_batch(parent.run_id, metrics=[Metric(k, v, _now_ms(), 0) for k, v in summary_metrics.items()])
    client.set_tag(parent.run_id, "mlflow_hpo.refit_rule", rounds_rule)

    details: dict[str, Any] = {
        "best_trial": best.number,
        "params": dict(best.params),
        "model_kwargs": kwargs,
        "cv_mean": best.values[0],
        "cv_std": cv_result.std,
        "cv_scores": list(cv_result.scores),
        "cv_scheme": job.splitter.scheme,
        "n_splits": job.splitter.n_splits,
        "test_score": test_score,
        "refit_n_estimators": n_rounds,
        "refit_rule": rounds_rule,
        "fold_best_iterations": list(cv_result.best_iterations),
        "wall_time_s": wall_time,
        "counts": dict(counts),
        "selection": selection.reason,
        "nested": None if nested is None else nested.as_dict(),
    }
    from mlflow_hpo.registry import log_and_register

    registry_error: HpoError | None = None
    try:
        registration = log_and_register(model, job, parent, best.number)
        details["registry"] = registration.summary_lines()
    except HpoError as exc:
        registry_error = exc
        details["registry"] = ["## Registry", "", f"- Not registered: {exc}", ""]
    with tempfile.TemporaryDirectory() as folder:
        report_metrics = write_study_report(study, job, details, Path(folder))
        client.log_artifacts(parent.run_id, folder)
    log_report_outputs(client, parent.run_id, study, report_metrics)
    if registry_error is not None:
        raise registry_error

    return TuneResult(
        study_name=job.study_name,
        parent_run_id=parent.run_id,
        best_params=dict(best.params),
        best_cv_mean=float(best.values[0]),
        best_cv_std=cv_result.std,
        test_score=test_score,
        metric=name,
        n_trials_by_state=dict(counts),
        model_uri=registration.model_uri,
        registered_model=registration.name,
        registered_version=registration.version,
    )


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)
