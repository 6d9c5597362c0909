"""The sweep: ask a batch from Optuna, train it in compiled calls, tell the results, log to MLflow.

This is the orchestration shell around the pure core; it owns every side effect (study storage,
tracking, progress display, files under ``runs_dir``).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from pipeline.config import RUN_SECTIONS, SPEC_ATTR, Space, TrialSpec, to_flat_dict
from pipeline.core.metrics import TrialResult, compact_trace
from pipeline.engine import Engine, check_fits
from pipeline.engine.datasets import load_dataset
from pipeline.engine.timing import Stopwatch
from pipeline.search import grid as grids
from pipeline.search import lease as leases
from pipeline.search import samplers as search_space
from pipeline.search import study as studies
from pipeline.tracking import Tracker, check_reachable, default_uri, open_tracker, run_name
from pipeline.tracking.artifacts import log_run_files

DONE = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
LIVE = (*DONE, optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
# What a finished study logs to its parent run: (cfg, study, tracker) -> None.
LogArtifacts = Callable[[object, optuna.Study, Tracker], None]


@dataclass
class SweepSummary:
    study: optuna.Study
    trials_run: int
    wall_s: float
    compile_s: float  # compile-thread seconds (overlapped with training)
    compile_wait_s: float  # seconds training waited for executables
    train_s: float
    logging_s: float  # MLflow time on the background thread
    logging_cpu_s: float  # of which that thread ran on a core (the rest: waiting)
    logging_wait_s: float  # of which the sweep waited for at the end
    optuna_s: float  # seconds the sweep waited for Optuna (ask, suggest, report, last tells)
    optuna_thread_s: float  # Optuna time on the recorder thread (results and tells)
    optuna_thread_cpu_s: float
    executables: int
    padding_waste: float  # share of layer-steps spent on masked layers and padding rows
    parent_run_id: str | None
    phases: dict[str, float]  # when each phase of the sweep ended (time.time())


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} trials/s"),
        TextColumn("best {task.fields[best]}"),
        TextColumn("explosions {task.fields[explosions]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def recover(cfg, space: Space, study: optuna.Study, tracker: Tracker | None, me: str = "") -> None:
    """After a crash: fail and re-enqueue stale RUNNING trials, end their MLflow runs KILLED and
    log the child runs a killed worker had not logged yet (see pipeline.search.lease)."""
    leases.recover(study, cfg.study.lease_s, me, space.searched())
    if tracker is None:
        return
    now, expiries = time.time(), leases.leases(study)

    def dead(worker: str) -> bool:
        return worker != me and not leases.worker_alive(worker, expiries, now)

    trials = study.get_trials(deepcopy=False, states=DONE)
    tracker.reconcile(trials, dead, lambda t: studies.trial_spec(study, t).flat())


@dataclass
class Stores:
    """What one sweep process writes to and trains with (``open_stores``)."""

    study: optuna.Study
    lease: leases.Lease
    tracker: Tracker | None
    engine: Engine


def open_stores(
    cfg, space: Space, experiment: str | None, parent_run: str | None, worker: int | None
) -> Stores:
    """Check, then open in order: the study, this process's lease, the MLflow parent run, the
    crash recovery and the grid's plan (by a lone sweep; `sweep --workers N` does both in its
    launcher), and the engine on the data. Nothing is written before the checks pass; what is
    opened is closed again if a later step fails (the parent run ends FAILED, or KILLED on
    Ctrl-C)."""
    check_fits(cfg, space)  # a space that cannot fit in memory
    if cfg.tracking.enabled:  # a server that does not answer: one line, nothing written
        check_reachable(cfg.tracking.uri or default_uri(cfg.runs_dir))
    study = studies.open_study(cfg, space, worker)
    Path(cfg.runs_dir).mkdir(parents=True, exist_ok=True)
    lease = leases.Lease(study, cfg.study.lease_s).start()
    tracker = None
    try:
        tracker = open_tracker(cfg, space, experiment, lease.worker, parent_run)
        if worker is None:
            recover(cfg, space, study, tracker, lease.worker)
            if cfg.study.design == "grid":  # every point enqueued (pipeline.search.grid)
                grids.plan(study, cfg, space)
        engine = Engine(cfg, load_dataset(cfg.data), space)
    except BaseException as e:
        lease.end()
        if tracker is not None:
            tracker.close("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    return Stores(study, lease, tracker, engine)


class Sweep:
    """One ``make sweep``: the ask-train-tell loop and its bookkeeping, over opened ``Stores``."""

    def __init__(
        self,
        cfg,
        space: Space,
        stores: Stores,
        console: Console,
        log_artifacts: LogArtifacts = log_run_files,
    ):
        self.cfg = cfg
        self.log_artifacts = log_artifacts
        self.space = space
        self.searched = space.searched()
        self.study, self.lease = stores.study, stores.lease
        self.tracker, self.engine = stores.tracker, stores.engine
        # study.design=grid: suggested from the learning-rate range of the grid's limits.
        self.grid = cfg.study.design == "grid"
        self.suggest_space = grids.search_space(cfg, space) if self.grid else space
        # What every trial shares; each trial's spec adds the values the space fixes or samples.
        self.base = to_flat_dict(cfg, RUN_SECTIONS)
        self.multi = len(cfg.study.objectives) > 1
        # Intermediate values go to Optuna only when a pruner reads them (Optuna prunes
        # single-objective studies only): each report is a storage write, six per trial at the
        # defaults, and the same curves are in MLflow and the trial's ``trace`` attribute.
        self.prunes = cfg.study.pruner != "none" and not self.multi
        self.console = console
        self.progress = _progress(console)
        self.optuna_s = 0.0
        # Results are told to Optuna, then queued for MLflow, on one recorder thread, in the
        # order they finish, while the next group trains; the next ask waits for them.
        self.recorder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="optuna")
        self.recording: list[Future] = []
        self.record_clock = Stopwatch()
        self.trained = 0
        self.told = 0
        self.exploded = 0
        self.best = float("inf")
        self.best_name = ""  # run name of the best trial so far, e.g. he_normal·relu·d16·g1.41
        self.batch: list[optuna.trial.Trial] = []
        self.specs: list[TrialSpec] = []
        self.untold: set[int] = set()
        self.stop_requested = False
        self.phases = {"setup": time.time()}  # stores, study, tracker, data and engine ready

    def _request_stop(self, signum, frame) -> None:
        """First Ctrl-C/SIGTERM: stop at the next chunk boundary, never inside a storage write
        (an interrupt there once broke the journal's file lock). A second one stops at once."""
        if self.stop_requested:
            raise KeyboardInterrupt
        self.stop_requested = True

    def _stop_point(self) -> None:
        if self.stop_requested:
            raise KeyboardInterrupt

    def run(self) -> SweepSummary:
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._request_stop)
        try:
            return self._run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self) -> SweepSummary:
        t_start = time.perf_counter()
        # Failed trials (an interrupted batch) are not done: the rerun trains their budget again.
        finished = len(self.study.get_trials(deepcopy=False, states=DONE))
        remaining = max(0, self.cfg.study.n_trials - finished)
        if self.grid:  # what is planned so far; extensions add to it
            remaining = min(remaining, grids.waiting(self.study))
        if remaining == 0 and not self.grid:  # a grid may still grow: said after the loop
            self.console.print(
                f"study {self.cfg.study.name!r} already has {finished} finished trials "
                f"(study.n_trials={self.cfg.study.n_trials})"
            )
        self.t_start = t_start
        self.task = self.progress.add_task(
            self.cfg.study.name, total=remaining, rate="-", best="-", explosions=0
        )
        status = "KILLED"
        try:
            with self.progress:
                while (size := self._next_batch_size()) is not None:
                    if size > 0:
                        self._run_batch(size)
                    else:  # other workers hold the remaining trials: wait for them
                        self._wait(1.0)
            status = "FINISHED"
            self.phases["trained"] = time.time()
            if self.grid and self.told == 0:
                why = (
                    f"study.n_trials={self.cfg.study.n_trials} reached"
                    if finished >= self.cfg.study.n_trials
                    else "its whole grid: every arm's basin closed or at study.grid_limits"
                )
                self.console.print(
                    f"study {self.cfg.study.name!r} already has {finished} finished trials, {why}"
                )
        finally:
            # Interrupted or crashed: every trained result is still recorded (a second Ctrl-C
            # stops waiting for them), trials asked but not told fail, never stay RUNNING, and
            # their configurations are enqueued again for the rerun. An interrupt can land
            # between a tell and its bookkeeping: fail_and_requeue skips a finished trial.
            with contextlib.suppress(Exception, KeyboardInterrupt):
                self._drain(raise_errors=False)
            self.recorder.shutdown(wait=False, cancel_futures=True)
            frozen = {t.number: t for t in self.study.get_trials(deepcopy=False)}
            for trial in self.batch:
                if trial.number in self.untold:
                    params = leases.configuration(frozen[trial.number], self.searched)
                    leases.fail_and_requeue(self.study, trial.number, params)
            self.lease.end()
            if self.tracker is not None:
                if status == "FINISHED" and self.tracker.owns_parent:
                    self.log_artifacts(self.cfg, self.study, self.tracker)
                    self.phases["figures"] = time.time()
                warning = self.tracker.close(status)
                if warning:
                    self.console.print(f"[yellow]warning:[/] {warning}", highlight=False)
                self.phases["mlflow_closed"] = time.time()
        stats = self.engine.stats
        return SweepSummary(
            study=self.study,
            trials_run=self.told,
            wall_s=time.perf_counter() - t_start,
            compile_s=self.engine.compile_clock.seconds,
            compile_wait_s=stats.compile_wait_s,
            train_s=stats.train_s,
            logging_s=self.tracker.logging_s if self.tracker else 0.0,
            logging_cpu_s=self.tracker.clock.cpu_seconds if self.tracker else 0.0,
            logging_wait_s=self.tracker.wait_s if self.tracker else 0.0,
            optuna_s=self.optuna_s,
            optuna_thread_s=self.record_clock.seconds,
            optuna_thread_cpu_s=self.record_clock.cpu_seconds,
            executables=stats.executables,
            padding_waste=1 - stats.layer_steps / max(stats.padded_layer_steps, 1),
            parent_run_id=self.tracker.parent_id if self.tracker else None,
            phases=self.phases,
        )

    def _next_batch_size(self) -> int | None:
        """Trials to ask now: None once the study has ``n_trials`` finished trials, 0 while other
        workers hold all the rest. Re-enqueued (WAITING) trials are asked first."""
        self._stop_point()
        self._drain()
        leases.recover(self.study, self.cfg.study.lease_s, self.lease.worker, self.searched)
        trials = self.study.get_trials(deepcopy=False)
        finished = sum(t.state in DONE for t in trials)
        if finished >= self.cfg.study.n_trials:
            return None
        running = sum(t.state == optuna.trial.TrialState.RUNNING for t in trials)
        room = self.cfg.study.n_trials - finished - running
        if self.grid:
            queued = sum(t.state == optuna.trial.TrialState.WAITING for t in trials)
            if queued == 0 and running:
                return 0  # other workers still train: their results decide the extension
            if queued == 0:
                queued = grids.extend(self.study, self.cfg)
                if queued == 0:
                    return None  # every arm's basin is closed, or the limits are reached
                total = self.progress.tasks[self.task].total or 0
                self.progress.update(self.task, total=total + min(queued, max(room, 0)))
            room = min(room, queued)
        return max(0, min(self.cfg.study.batch_size, room))

    def _wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._stop_point()
            time.sleep(0.1)

    def _keep_first(self, batch: list[optuna.trial.Trial]) -> list[optuna.trial.Trial]:
        """Workers asking at once can overshoot ``n_trials``: keep only trials among the study's
        first ``n_trials`` live ones (by number, which storage assigns in order) and fail the
        rest. A kept trial stays kept, since trials before it can only drop out (fail)."""
        live = sorted(t.number for t in self.study.get_trials(deepcopy=False, states=LIVE))
        first = set(live[: self.cfg.study.n_trials])
        for trial in batch:
            if trial.number not in first:
                trial.set_user_attr("overflow", True)
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return [t for t in batch if t.number in first]

    def _planned_only(self, batch: list[optuna.trial.Trial]) -> list[optuna.trial.Trial]:
        """Under the grid, a trial asked when another worker had just taken the last queued
        point would be sampled off the grid: fail it (it is not part of the design)."""
        frozen = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        kept = []
        for trial in batch:
            if frozen[trial.number].system_attrs.get("fixed_params"):
                kept.append(trial)
            else:
                trial.set_user_attr("off_grid", True)
                self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        return kept

    def _run_batch(self, size: int) -> None:
        self._stop_point()
        t0 = time.perf_counter()
        self.batch = [self.study.ask() for _ in range(size)]
        self.untold = {t.number for t in self.batch}
        for trial in self.batch:
            self.lease.hold(trial)
        self.batch = self._keep_first(self.batch)
        if self.grid:
            self.batch = self._planned_only(self.batch)
        self.untold = {t.number for t in self.batch}
        self.specs = [
            TrialSpec.from_flat({**self.base, **search_space.suggest(t, self.suggest_space)})
            for t in self.batch
        ]
        self.optuna_s += time.perf_counter() - t0
        if not self.batch:
            return
        self.engine.run(self.specs, on_chunk=self._on_chunk, on_result=self._on_result)

    def _on_chunk(self, ids: list[int], step: int, values: list[float]) -> set[int]:
        """Report intermediate objectives; return the trials the pruner stops."""
        self._stop_point()
        if not self.prunes:
            return set()
        t0 = time.perf_counter()
        pruned = set()
        for i, value in zip(ids, values, strict=True):
            self.batch[i].report(value, step)
            if self.batch[i].should_prune():
                pruned.add(i)
        self.optuna_s += time.perf_counter() - t0
        return pruned

    def _drain(self, raise_errors: bool = True) -> None:
        """Wait until every finished trial is told; re-raise the first error the recorder hit."""
        t0 = time.perf_counter()
        pending, self.recording = self.recording, []
        try:
            wait(pending)
            if raise_errors:
                for future in pending:
                    future.result()
        finally:
            self.optuna_s += time.perf_counter() - t0

    def _on_result(self, i: int, result: TrialResult) -> None:
        trial, spec = self.batch[i], self.specs[i]
        if result.diagnostics:
            # Here, not on the logging thread: theory's quadrature runs on XLA too, and no JAX
            # call may run beside training (or after a stalled call, behind it).
            from pipeline.core.predict import trial_prediction

            result.theory = trial_prediction(spec)
        self.recording.append(self.recorder.submit(self._record, trial, spec, result))
        self.trained += 1
        self.exploded += result.metrics["explosion_count"] > 0
        if result.metrics["steps_to_target"] < self.best:
            self.best = result.metrics["steps_to_target"]
            self.best_name = run_name(spec)
        elapsed = time.perf_counter() - self.t_start
        self.progress.update(
            self.task,
            advance=1,
            rate=f"{self.trained / elapsed:.2f}",
            explosions=self.exploded,
            best=f"{self.best:.0f} steps {self.best_name}"
            if self.best <= self.cfg.train.steps
            else "-",
        )

    def _record(self, trial: optuna.trial.Trial, spec: TrialSpec, result: TrialResult) -> None:
        """On the recorder thread: store the trial's spec and result in the study, tell it,
        queue its child run."""
        try:
            with self.record_clock.timing():
                config = spec.flat()
                trial.set_user_attr(SPEC_ATTR, config)
                trial.set_user_attr("metrics", result.metrics)
                # per seed, for the bootstrap of `recommend` (pipeline.reports.recommend)
                seed_steps = [seed["steps_to_target"] for seed in result.seeds]
                trial.set_user_attr(studies.SEED_STEPS_ATTR, seed_steps)
                trial.set_user_attr(studies.SEED_DIVERGED_ATTR, studies.seed_diverged(result.seeds))
                trial.set_user_attr(
                    "trace", compact_trace(result, self.cfg.metrics.curve_every_steps)
                )
                if result.diagnostics:  # computed in _on_result; the reports read it back
                    trial.set_user_attr(studies.THEORY_ATTR, studies.stored_theory(result.theory))
                if result.pruned:
                    state = optuna.trial.TrialState.PRUNED
                    self.study.tell(trial, state=state)
                else:
                    state = optuna.trial.TrialState.COMPLETE
                    self.study.tell(trial, studies.objective_values(self.cfg, result.metrics))
        except UpdateFinishedTrialError:
            # This process stalled past its lease and another worker failed and re-enqueued
            # the trial: that copy will be trained and logged instead.
            self.untold.discard(trial.number)
            return
        self.untold.discard(trial.number)
        self.told += 1
        if self.tracker is not None:
            self.tracker.log_trial(
                trial.number, config, result, state.name, self.cfg.metrics.curve_every_steps
            )


def run_sweep(
    cfg,
    experiment: str | None = None,
    console: Console | None = None,
    parent_run: str | None = None,
    worker: int | None = None,
    space: Space | None = None,
    log_artifacts: LogArtifacts = log_run_files,
) -> SweepSummary:
    """Run the study ``cfg.study`` describes up to ``study.n_trials`` finished trials.

    ``worker``: this process is worker ``worker`` of ``sweep --workers N``
    (pipeline.search.workers); its child runs go under the MLflow run ``parent_run``, which the
    launcher ends. ``space``: ``cfg.space`` as ``pipeline.config.load`` parsed it.
    ``log_artifacts(cfg, study, tracker)``: what a finished study logs to its parent run; the
    config and trials table unless the caller passes more (the command passes
    ``pipeline.reports.figures.log_sweep_artifacts``, which draws the figures too).

    JAX's process-wide set-up (CPU devices, the persistent cache) is the entry point's: the
    command calls ``pipeline.engine.devices.setup_jax(cfg)`` before this; a library call leaves
    the process's JAX settings as they are.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    console = console or Console(stderr=True)
    space = Space.parse(cfg.space) if space is None else space
    stores = open_stores(cfg, space, experiment, parent_run, worker)
    return Sweep(cfg, space, stores, console, log_artifacts).run()
