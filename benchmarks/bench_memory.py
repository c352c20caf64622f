"""Memory: peak resident memory of a study on a large synthetic table.

A fresh Python process loads mlflow_hpo, records its resident set size
(RSS), then runs ``tune`` on a Parquet file of synthetic rows while a
thread samples RSS every 20 ms. The RSS after each trial shows whether
trials keep copies of the data; the peak over the table's in-memory size
shows what a study costs in memory. ``tracemalloc`` follows the memory
that Python objects and NumPy arrays hold, so RSS growth that it does not
see comes from native code (LightGBM) or memory the C allocator keeps.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks._common import Section, single_thread_space

N_FEATURES = 20
# Growth of the memory that Python objects and NumPy arrays hold, per trial,
# above this many MiB means some trial state keeps data alive. RSS is not
# the check: after a trial it moves up and down by tens of MiB with what
# the C allocator and LightGBM keep from the last fit.
LEAK_MIB_PER_TRIAL = 5.0

_WORKER = r"""
import json, sys, threading, time, tracemalloc
from pathlib import Path
import numpy as np, pandas as pd

folder, n_rows, n_features, n_trials = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
space = sys.argv[5]
path = folder / "table.parquet"
rng = np.random.default_rng(0)
X = rng.normal(size=(n_rows, n_features))
frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(n_features)])
frame["y"] = (X[:, 0] + 0.5 * X[:, 1] ** 2 + rng.normal(size=n_rows) > 0.5).astype(int)
frame.to_parquet(path)
table_mib = frame.memory_usage(deep=True).sum() / 2**20
del X, frame

import mlflow, optuna
from benchmarks._common import current_rss_mib, peak_rss_mib, quiet_logs, tracking_store
from mlflow_hpo import TuneConfig, tune
from mlflow_hpo.storage import open_storage, storage_url
quiet_logs()
samples = []
stop = threading.Event()
def sample():
    while not stop.is_set():
        samples.append((time.time(), current_rss_mib(), tracemalloc.get_traced_memory()[0] / 2**20))
        time.sleep(0.02)
with tracking_store(folder / "store") as uri:
    baseline = current_rss_mib()
    tracemalloc.start()
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    config = TuneConfig(data=str(path), target="y", space=space, cv="stratified", n_folds=3, n_trials=n_trials,
                        strategy="random", pruner="none", importance="none", max_boost_rounds=50,
                        early_stopping_rounds=10, register_model="", study_name="memory")
    started = time.time()
    result = tune(config)
    seconds = time.time() - started
    stop.set()
    thread.join()
    study = optuna.load_study(study_name="memory", storage=open_storage(storage_url(uri)))
    ends = [t.datetime_complete.timestamp() for t in study.get_trials(deepcopy=False) if t.datetime_complete]
def at(moment, column):
    before = [sample[column] for sample in samples if sample[0] <= moment]
    return before[-1] if before else float("nan")
print(json.dumps({
    "table_mib": table_mib, "baseline_mib": baseline, "peak_mib": peak_rss_mib(),
    "sampled_peak_mib": max(sample[1] for sample in samples),
    "after_trial_mib": [at(e, 1) for e in sorted(ends)],
    "traced_after_trial_mib": [at(e, 2) for e in sorted(ends)],
    "seconds": seconds, "trials": len(ends),
}))
"""


def measure(n_rows: int, n_trials: int, folder: Path) -> dict[str, Any]:
    """Run the memory worker in a fresh interpreter and return its measurements."""
    folder.mkdir(parents=True, exist_ok=True)
    repo = Path(__file__).resolve().parent.parent
    completed = subprocess.run(
        [sys.executable, "-c", _WORKER, str(folder), str(n_rows), str(N_FEATURES), str(n_trials),
         single_thread_space(folder)],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"memory worker failed with status {completed.returncode}:\n{completed.stderr[-3000:]}")
    return dict(json.loads(completed.stdout.strip().splitlines()[-1]))


def run(*, quick: bool, workdir: Path) -> Section:
    """Measure one study on the synthetic table and compare its memory with the table's size."""
    n_rows, n_trials = (5_000, 2) if quick else (1_000_000, 8)
    result = measure(n_rows, n_trials, workdir / "memory")
    after = result["after_trial_mib"]
    traced = result["traced_after_trial_mib"]
    per_trial = (after[-1] - after[0]) / max(1, len(after) - 1)
    half = len(after) // 2
    # The growth over the second half of the trials: 0 when the allocator has warmed up.
    late_per_trial = (after[-1] - after[half]) / max(1, len(after) - 1 - half)
    traced_per_trial = (traced[-1] - traced[0]) / max(1, len(traced) - 1)
    above_baseline = result["peak_mib"] - result["baseline_mib"]
    rows = [
        ["table in memory (pandas)", result["table_mib"], 1.0],
        ["process RSS before tune()", result["baseline_mib"], result["baseline_mib"] / result["table_mib"]],
        ["peak RSS during tune()", result["peak_mib"], result["peak_mib"] / result["table_mib"]],
        ["peak RSS above the baseline", above_baseline, above_baseline / result["table_mib"]],
        ["RSS after the first trial", after[0], after[0] / result["table_mib"]],
        ["RSS after the last trial", after[-1], after[-1] / result["table_mib"]],
        ["RSS change per trial after the first", per_trial, per_trial / result["table_mib"]],
        ["RSS change per trial over the second half of the trials", late_per_trial,
         late_per_trial / result["table_mib"]],
        ["Python and NumPy memory (tracemalloc) change per trial after the first", traced_per_trial,
         traced_per_trial / result["table_mib"]],
    ]
    return Section(
        name="memory",
        title="Memory",
        columns=["measure", "MiB", "x table size"],
        rows=rows,
        target=(f"no copy of the data per trial (change of Python and NumPy memory per trial "
                f"<= {LEAK_MIB_PER_TRIAL:g} MiB)"),
        target_met=traced_per_trial <= LEAK_MIB_PER_TRIAL,
        notes=[f"{n_rows:,} rows x {N_FEATURES} float64 features + binary target, {result['trials']} trials "
               f"of single-threaded LightGBM (3-fold CV, at most 50 rounds), tune() took {result['seconds']:.0f} s."],
        data=result,
    )
