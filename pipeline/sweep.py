"""The sweep: ask a batch from Optuna, train it in compiled calls, tell the results, log to MLflow.

This is the orchestration shell around the pure core; it owns every side effect (study storage,
tracking, progress display, files under ``runs_dir``).
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import optuna
from omegaconf import OmegaConf
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from pipeline import plots
from pipeline import space as search_space
from pipeline import study as studies
from pipeline.config import RUN_SECTIONS, flatten_space, possible_values, to_flat_dict
from pipeline.data import load_dataset
from pipeline.engine import Engine
from pipeline.metrics import TrialResult
from pipeline.tracking import Tracker, default_uri

TRIAL_SECTIONS = ("model", "init", "train")


@dataclass
class SweepSummary:
    study: optuna.Study
    trials_run: int
    wall_s: float
    compile_s: float  # compile-thread seconds (overlapped with training)
    compile_wait_s: float  # seconds training waited for executables
    train_s: float
    logging_s: float  # MLflow time on the background thread
    logging_wait_s: float  # of which the sweep waited for at the end
    optuna_s: float
    executables: int
    padding_waste: float  # share of layer-steps spent on masked layers and padding rows
    parent_run_id: str | None


def setup_jax(cfg) -> None:
    """CPU devices and JAX's persistent cache under runs/ (a second sweep compiles ~nothing)."""

    from pipeline.devices import configure_cpu, use_compilation_cache

    configure_cpu(cfg.engine.cpu_devices)
    if cfg.engine.compilation_cache:
        use_compilation_cache(cfg.engine.cache_dir or Path(cfg.runs_dir) / "jax_cache")


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


def open_study(cfg, space: dict) -> optuna.Study:
    """Create the study, or load it to continue up to ``study.n_trials``."""
    study = optuna.create_study(
        study_name=cfg.study.name,
        storage=studies.make_storage(studies.storage_spec(cfg)),
        sampler=search_space.make_sampler(cfg.study.sampler, cfg.study.seed, space),
        pruner=search_space.make_pruner(cfg.study.pruner),
        directions=studies.directions(cfg),
        load_if_exists=True,
    )
    # The base config, so `make best` can rebuild each trial's full configuration.
    study.set_user_attr("config", to_flat_dict(cfg, RUN_SECTIONS))
    return study


def open_tracker(cfg, experiment: str | None) -> Tracker | None:
    if not cfg.tracking.enabled:
        return None
    tracker = Tracker(
        cfg.tracking.uri or default_uri(cfg.runs_dir),
        cfg.study.name,
        cfg.runs_dir,
        description=f"Weight-initialization sweep `{cfg.study.name}`: one child run per Optuna "
        "trial; sort by steps_to_target (lower is faster).",
    )
    tracker.start_parent(
        f"sweep {datetime.now():%Y-%m-%d %H:%M:%S}",
        to_flat_dict(cfg),
        {"experiment": experiment or "default", "sampler": cfg.study.sampler},
    )
    return tracker


class Sweep:
    """One ``make sweep``: the ask-train-tell loop and its bookkeeping."""

    def __init__(self, cfg, experiment: str | None, console: Console):
        self.cfg = cfg
        self.space = flatten_space(cfg.space)
        self.study = open_study(cfg, self.space)
        self.tracker = open_tracker(cfg, experiment)
        self.engine = Engine(cfg, load_dataset(cfg.data), possible_values(cfg, "init.weights"))
        self.base = to_flat_dict(cfg, TRIAL_SECTIONS)
        self.multi = len(cfg.study.objectives) > 1
        self.console = console
        self.progress = _progress(console)
        self.optuna_s = 0.0
        self.told = 0
        self.exploded = 0
        self.best = float("inf")
        self.batch: list[optuna.trial.Trial] = []
        self.configs: list[dict] = []
        self.untold: set[int] = set()
        self.stop_requested = False

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
        done_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
        finished = len(self.study.get_trials(deepcopy=False, states=done_states))
        remaining = max(0, self.cfg.study.n_trials - finished)
        if remaining == 0:
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
                while self.told < remaining:
                    self._run_batch(min(self.cfg.study.batch_size, remaining - self.told))
            status = "FINISHED"
        finally:
            # Interrupted or crashed: trials asked but not told fail, never stay RUNNING.
            # An interrupt can land between a tell and its bookkeeping: skip_if_finished.
            for trial in self.batch:
                if trial.number in self.untold:
                    fail = optuna.trial.TrialState.FAIL
                    self.study.tell(trial, state=fail, skip_if_finished=True)
            if self.tracker is not None:
                if status == "FINISHED":
                    _log_sweep_artifacts(self.cfg, self.study, self.tracker)
                self.tracker.close(status)
        stats = self.engine.stats
        return SweepSummary(
            study=self.study,
            trials_run=self.told,
            wall_s=time.perf_counter() - t_start,
            compile_s=self.engine.compile_clock.seconds,
            compile_wait_s=stats.compile_wait_s,
            train_s=stats.train_s,
            logging_s=self.tracker.logging_s if self.tracker else 0.0,
            logging_wait_s=self.tracker.wait_s if self.tracker else 0.0,
            optuna_s=self.optuna_s,
            executables=stats.executables,
            padding_waste=1 - stats.layer_steps / max(stats.padded_layer_steps, 1),
            parent_run_id=self.tracker.parent_id if self.tracker else None,
        )

    def _run_batch(self, size: int) -> None:
        self._stop_point()
        t0 = time.perf_counter()
        self.batch = [self.study.ask() for _ in range(size)]
        self.untold = {t.number for t in self.batch}
        self.configs = [{**self.base, **search_space.suggest(t, self.space)} for t in self.batch]
        self.optuna_s += time.perf_counter() - t0
        self.engine.run(self.configs, on_chunk=self._on_chunk, on_result=self._on_result)

    def _on_chunk(self, ids: list[int], step: int, values: list[float]) -> set[int]:
        """Report intermediate objectives; return the trials the pruner stops."""
        self._stop_point()
        if self.multi:  # Optuna prunes single-objective studies only
            return set()
        t0 = time.perf_counter()
        pruned = set()
        for i, value in zip(ids, values, strict=True):
            self.batch[i].report(value, step)
            if self.batch[i].should_prune():
                pruned.add(i)
        self.optuna_s += time.perf_counter() - t0
        return pruned

    def _on_result(self, i: int, result: TrialResult) -> None:
        trial = self.batch[i]
        t0 = time.perf_counter()
        trial.set_user_attr("metrics", result.metrics)
        if result.pruned:
            state = optuna.trial.TrialState.PRUNED
            self.study.tell(trial, state=state)
        else:
            state = optuna.trial.TrialState.COMPLETE
            self.study.tell(trial, studies.objective_values(self.cfg, result.metrics))
        self.untold.discard(trial.number)
        self.optuna_s += time.perf_counter() - t0
        if self.tracker is not None:
            self.tracker.log_trial(
                trial.number,
                self.configs[i],
                result,
                state.name,
                self.cfg.metrics.curve_every_steps,
            )
        self.told += 1
        self.exploded += result.metrics["explosion_count"] > 0
        self.best = min(self.best, result.metrics["steps_to_target"])
        elapsed = time.perf_counter() - self.t_start
        self.progress.update(
            self.task,
            advance=1,
            rate=f"{self.told / elapsed:.2f}",
            explosions=self.exploded,
            best=f"{self.best:.0f} steps" if self.best <= self.cfg.train.steps else "-",
        )


def run_sweep(cfg, experiment: str | None = None, console: Console | None = None) -> SweepSummary:
    """Run the study ``cfg.study`` describes up to ``study.n_trials`` finished trials."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    Path(cfg.runs_dir).mkdir(parents=True, exist_ok=True)
    setup_jax(cfg)
    return Sweep(cfg, experiment, console or Console(stderr=True)).run()


def _log_sweep_artifacts(cfg, study: optuna.Study, tracker: Tracker) -> None:
    out = Path(cfg.runs_dir) / cfg.study.name
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "config.yaml"
    config_path.write_text(OmegaConf.to_yaml(cfg))
    tracker.log_parent_artifact(config_path)
    for path in plots.sweep_plots(study, out):
        tracker.log_parent_artifact(path, "plots")
    table_path = out / "trials.csv"
    study.trials_dataframe().to_csv(table_path, index=False)
    tracker.log_parent_artifact(table_path)
