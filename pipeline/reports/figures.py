"""The figures of a finished sweep, logged to its parent run beside the config and trials table.

The figures are drawn by a process of their own (``python -m pipeline.reports.figures
--figures <job>``) that outlives the command, unless ``tracking.figures=wait``. The command
passes ``log_sweep_artifacts`` to the sweep (``pipeline.search.sweep``), which calls it when the
study finishes: the sweep loop sits below the reports and does not import them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import optuna

from pipeline.search import study as studies
from pipeline.tracking.artifacts import log_run_files
from pipeline.tracking.tracker import Tracker


def log_sweep_artifacts(cfg, study: optuna.Study, tracker: Tracker) -> None:
    """The parent run's artifacts: the resolved config, the trials table and the figures
    (``tracking.figures``: drawn in a process of their own, before the sweep ends, or not)."""
    out = log_run_files(cfg, study, tracker)
    if cfg.tracking.figures == "off":
        return
    from pipeline.engine.devices import jax_setup

    job = {
        "storage": studies.storage_spec(cfg),
        "study": cfg.study.name,
        "out": str(out),
        "uri": tracker.uri,
        "parent": tracker.parent_id,
        "jax": jax_setup(cfg),  # the sweep's: theory's kernels load from the sweep's cache
    }
    if cfg.tracking.figures == "wait":
        draw_figures(job, lambda path: tracker.log_parent_artifact(path, "plots"))
    else:
        start_figures(job)


FIGURES_PENDING = "figures.pending"  # in runs/<study>/ while a figures process works


def start_figures(job: dict) -> None:
    """Draw the figures in a process of their own that outlives this command (about 4 s of a
    sweep on 2 cores, and nothing the results table needs); ``figures.pending`` says it is
    still at work (it holds the job, which may carry a storage password: owner-only)."""
    import subprocess
    import sys

    out = Path(job["out"])
    pending = out / FIGURES_PENDING
    with open(os.open(pending, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        json.dump(job, f)
    with open(out / "figures.log", "w") as log:
        subprocess.Popen(
            [sys.executable, "-m", "pipeline.reports.figures", "--figures", str(pending)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C meant for the next command does not stop it
        )


def draw_figures(job: dict, log=None) -> list[Path]:
    """Every figure of the study in ``job``, written under ``job["out"]`` and logged to the
    parent run ``job["parent"]`` (folder ``plots``), or handed to ``log(path)``."""
    from pipeline.reports import plots

    study = optuna.load_study(study_name=job["study"], storage=studies.make_storage(job["storage"]))
    paths = plots.sweep_plots(study, Path(job["out"]))
    if log is None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=job["uri"])

        def log(path: Path) -> None:
            client.log_artifact(job["parent"], str(path), "plots")

    for path in paths:
        log(path)
    return paths


def wait_for_figures(out: Path, timeout_s: float = 300) -> None:
    """Until a background figures process for ``runs/<study>`` (``out``) has finished."""
    deadline = time.monotonic() + timeout_s
    while (Path(out) / FIGURES_PENDING).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the figures of {out} are still being drawn after {timeout_s} s")
        time.sleep(0.1)


if __name__ == "__main__":  # python -m pipeline.reports.figures --figures <job>
    import sys

    from pipeline.engine.devices import apply_jax_setup

    job_path = Path(sys.argv[2])
    try:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        job = json.loads(job_path.read_text())
        apply_jax_setup(**job["jax"])  # the entry point's JAX set-up
        draw_figures(job)
    finally:
        job_path.unlink(missing_ok=True)
