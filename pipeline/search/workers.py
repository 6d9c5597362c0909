"""``sweep --workers N``: N sweep processes on this host sharing one study.

The launcher opens the study, recovers what a crash left behind, starts the MLflow parent run,
then starts N ``python -m pipeline sweep --worker i`` processes. Each worker loops ask, train,
tell on its own batches until the study has ``study.n_trials`` finished trials; before asking it
counts finished and running trials, so the total stays ``study.n_trials`` (see
``Sweep._next_batch_size`` and ``Sweep._keep_first`` for the race between workers). They share
the study through the journal file (Optuna's JournalStorage with a file lock; SQLite is not safe
under concurrent writers) or any ``study.storage`` URL, log their child runs under the launcher's
parent run, and split the CPU cores between them. Ctrl-C or SIGTERM reaches the launcher only (the
workers run in their own sessions) and is forwarded once to each worker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

if TYPE_CHECKING:
    from pipeline.config import Space
    from pipeline.search.sweep import LogArtifacts


def worker_command(
    i: int,
    overrides: list[str],
    experiment: str | None,
    parent_run: str | None,
    cores: int,
    resume: bool = False,
) -> list[str]:
    cmd = [sys.executable, "-m", "pipeline", "sweep", "--worker", str(i)]
    if resume:
        cmd.append("--resume")
    if parent_run is not None:
        cmd += ["--parent-run", parent_run]
    if experiment:
        cmd += ["--experiment", experiment]
    return [*cmd, *overrides, f"engine.cpu_devices={cores}"]


def cores_per_worker(cfg, n: int) -> int:
    """``engine.cpu_devices`` of each worker: the user's choice, else an equal share of cores."""
    if cfg.engine.cpu_devices != "auto":
        return int(cfg.engine.cpu_devices)
    return max(1, (os.cpu_count() or 1) // n)


def launch(
    cfg,
    space: Space,
    experiment: str | None,
    overrides: list[str],
    n: int,
    console: Console,
    resume: bool = False,
    log_artifacts: LogArtifacts | None = None,
) -> int:
    """Run ``n`` workers to the end; 0 when all finished, 130 when interrupted, else 1.
    ``log_artifacts(cfg, study, tracker)``: what the finished study logs to its parent run (the
    config and trials table unless the caller passes more; see ``pipeline.search.sweep``)."""
    from pipeline.engine import check_fits
    from pipeline.search import lease
    from pipeline.search.study import open_study
    from pipeline.search.sweep import recover
    from pipeline.tracking import open_tracker
    from pipeline.tracking.artifacts import log_run_files

    check_fits(cfg, space)
    study = open_study(cfg, space)
    Path(cfg.runs_dir).mkdir(parents=True, exist_ok=True)
    held = lease.Lease(study, cfg.study.lease_s).start()  # keeps the parent run from looking dead
    tracker = open_tracker(cfg, space, experiment, held.worker)
    recover(cfg, space, study, tracker, held.worker)
    if cfg.study.design == "grid":  # the workers ask the planned points (pipeline.search.grid)
        from pipeline.search.grid import plan

        plan(study, cfg, space)
    parent = tracker.parent_id if tracker is not None else None
    env = dict(os.environ)
    # One single-threaded XLA device per core of each worker's share (pipeline.engine.devices).
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_cpu_multi_thread_eigen=false".strip()
    cores = cores_per_worker(cfg, n)
    procs = [
        subprocess.Popen(
            worker_command(i, overrides, experiment, parent, cores, resume),
            env=env,
            start_new_session=True,
        )
        for i in range(n)
    ]
    console.print(f"{n} workers on study {cfg.study.name!r}, {cores} CPU device(s) each")
    interrupted = False

    def forward(signum, frame) -> None:
        nonlocal interrupted
        interrupted = True
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = [p.wait() for p in procs]
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    held.end()
    failed = [i for i, c in enumerate(codes) if c != 0]
    status = "KILLED" if interrupted else "FAILED" if failed else "FINISHED"
    if tracker is not None:
        if status == "FINISHED":
            (log_artifacts or log_run_files)(cfg, study, tracker)
        warning = tracker.close(status)
        if warning:
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if failed:
        console.print(
            f"workers {', '.join(map(str, failed))} exited with "
            f"{', '.join(str(codes[i]) for i in failed)}; rerun the same command to continue"
        )
        return 130 if interrupted else 1
    return 0
