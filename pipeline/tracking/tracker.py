"""MLflow: one experiment per study, one parent run per sweep, one child run per trial.

All MLflow calls run on one background thread, so logging a finished batch overlaps with
training the next one; ``Tracker.close`` waits for the queue and reports the seconds spent.

A tracking server is asked once, quickly, before anything is written (``check_reachable``): a
wrong ``tracking.uri`` fails in seconds with one line. A server that goes away during a sweep
does not stop it: training goes on, what could not be logged is kept and logged again once the
server answers (at the latest when the sweep ends), and what is still missing then is logged by
the next sweep's ``reconcile`` from the study, which holds every result.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np

from pipeline.config import Space, redacted, to_flat_dict
from pipeline.core.metrics import TrialResult, diagnostic_scalars, diagnostics_csv
from pipeline.engine.timing import Stopwatch
from pipeline.writing import write_text

# The runs table (MLflow 3 opens GenAI views otherwise) in the study's shared view: MLflow 3.17
# loads a view from the experiment tag ``mlflow.sharedViewState.<key>`` when the address names
# ``viewStateShareKey=<key>`` (its "Share" button writes the same tag): sort and columns below.
VIEW_KEY = "initsweep"
RUNS_TABLE_QUERY = f"/runs?viewStateShareKey={VIEW_KEY}&workflowType=machine_learning"
VIEW_METRICS = ("steps_to_target", "explosion_count")
VIEW_PARAMS = ("init.weights", "init.gain", "model.activation", "model.depth")


def default_uri(runs_dir: str) -> str:
    return f"sqlite:///{Path(runs_dir).resolve() / 'mlflow.db'}"


# How long one quick question to a tracking server may take (MLflow's own request settings). A
# fresh `mlflow server` answers its first question in ~0.7 s on an idle 2-core machine and in over
# 3 s on a busy one (its first request loads the store); a silent server costs this wait once.
PROBE_TIMEOUT_S = 10
# While the server is away, how often the logging thread asks again.
PROBE_EVERY_S = 5
# Background logging to an http server: MLflow's retries, shortened from its ~4 minutes per
# request (7 retries, backoff factor 2) so that an outage is noticed in seconds; what fails is
# kept and logged again (Tracker.submit). Variables the user set win.
LOGGING_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}


@contextlib.contextmanager
def _quick_requests():
    """MLflow requests without retries and with a short timeout, inside the block."""
    names = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(PROBE_TIMEOUT_S),
    }
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(names)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _reason(error: Exception) -> str:
    """The useful part of an MLflow request error: the socket's words, or the first line."""
    text = str(error)
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text) or re.search(r"(timed out)", text)
    return (
        found.group(1).strip()
        if found
        else (text.strip().splitlines() or [type(error).__name__])[0][:200]
    )


def check_reachable(uri: str) -> None:
    """Ask an http tracking server one quick question; ``LookupError`` (one line) if it does not
    answer as an MLflow server. Local stores (sqlite, file) need no question."""
    if not _is_http(uri):
        return
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    _quiet()
    try:
        with _quick_requests():
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except (MlflowException, OSError) as e:
        from pipeline.config import redacted

        raise LookupError(
            f"cannot reach the MLflow tracking server at tracking.uri={redacted(uri)} "
            f"({redacted(_reason(e))}, asked with a {PROBE_TIMEOUT_S} s timeout): start it "
            "(mlflow server), fix tracking.uri, or set tracking.enabled=false"
        ) from None


def _quiet() -> None:
    # MLflow prints "View run ... at <tracking URI>" per run on an http server: noise per trial,
    # and the URI may carry a password (http://user:password@host).
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for name in ("mlflow", "alembic", "sqlalchemy"):
        logging.getLogger(name).setLevel(logging.WARNING)


def run_name(config: dict[str, Any]) -> str:
    """A name that says what the trial was, e.g. ``he_normal·relu·d16·g1.41``."""
    gain = config["init.gain"]
    gain = gain if isinstance(gain, str) else f"{gain:.3g}"
    return f"{config['init.weights']}·{config['model.activation']}·d{config['model.depth']}·g{gain}"


def param_text(value: Any) -> str:
    """A param as the runs table shows it: floats to 4 significant digits (a sampled gain reads
    0.6783, not 0.67826091...); the exact value stays in the trial's stored spec."""
    if isinstance(value, float) and math.isfinite(value):
        return str(float(f"{value:.4g}"))
    return str(value)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _diagnostic_metrics(result: TrialResult, config: dict[str, Any], now: int) -> list:
    """Theory's prediction beside what was measured: per-layer values at init (step = layer
    index, input layer 0) and the diagnostics' ratios and fractions at each chunk boundary
    (step = training step)."""
    from mlflow.entities import Metric

    if not result.diagnostics:  # metrics.diagnostics=false: neither measured nor predicted
        return []
    metrics = [Metric(k, float(v), now, 0) for k, v in result.theory.items() if _finite(v)]
    per_layer = {
        "init_grad_norm": "weight_grad_norm",
        "init_backprop_norm": "backprop_norm",
        "init_act_var": "act_var",
    }
    for metric, field in per_layer.items():
        metrics += [
            Metric(metric, float(v), now, layer)
            for layer, v in enumerate(result.diagnostics[field][0])
            if _finite(float(v))
        ]
    for boundary, step in enumerate(result.diagnostic_steps):
        scalars = diagnostic_scalars(result.diagnostics, boundary)
        metrics += [
            Metric(f"diag.{k}", v, now, int(step)) for k, v in scalars.items() if _finite(v)
        ]
    return metrics


# Points per curve a child run gets at most (loss and gradient norm of every step otherwise):
# each point is a row MLflow inserts, on the cores that train. A chart of 32 points shows a
# 300-step curve's shape; the curve's first and last step and the step where the smoothed loss
# reached the target are always kept, and the exact metrics (steps_to_target, explosion_count)
# are computed from every step before logging.
CURVE_POINTS = 32


def curve_indices(n: int, every: int, keep: Iterable[int] = ()) -> list[int]:
    """Which of a curve's ``n`` points to log: every ``every``-th, thinned to about
    ``CURVE_POINTS``, with the first, the last and ``keep`` (indices within the curve)."""
    if n <= 20:
        return list(range(n))
    stride = max(every, -(-n // CURVE_POINTS))
    chosen = {*range(0, n, stride), n - 1, *(k for k in keep if 0 <= k < n)}
    return sorted(chosen)


def _write_text(client, run_id: str, artifact_uri: str, text: str, path: str) -> None:
    """An artifact file of a run: written straight into a local artifact folder (no store
    round trip, no temporary copy), else through MLflow (a server's artifact store)."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme in ("file", ""):
        target = Path(url2pathname(parsed.path)) / path
        target.parent.mkdir(parents=True, exist_ok=True)
        write_text(target, text)  # whole or not at all: a reader never sees half a file
        return
    client.log_text(run_id, text, path)


def _batches(params: list, metrics: list) -> Iterable[tuple[list, list]]:
    """(params, metrics) parts within MLflow's limits for one ``log_batch``: at most 100 params
    and 1000 entities in all. Few calls matter: each one is a database transaction."""
    while params or metrics:
        p, params = params[:100], params[100:]
        m, metrics = metrics[: 1000 - len(p)], metrics[1000 - len(p) :]
        yield p, m


class Tracker:
    """Owns the MLflow client and the logging thread for one sweep."""

    def __init__(self, uri: str, study_name: str, runs_dir: str, description: str = ""):
        from mlflow.tracking import MlflowClient

        _quiet()
        check_reachable(uri)
        if _is_http(uri):
            for k, v in LOGGING_RETRIES.items():
                os.environ.setdefault(k, v)

        self.client = MlflowClient(tracking_uri=uri)
        self.uri = uri
        self.study_name = study_name
        self.experiment_id = self._experiment(study_name, runs_dir, description)
        self.missed: list[Callable[[], Any]] = []  # logging the server did not take (yet)
        self.missed_reason = ""
        self._child_ids: dict[int, str] = {}  # trial number -> child run id, once created
        self._last_probe = (0.0, True)  # (when, answered)
        self.parent_id: str | None = None
        self.worker = ""  # the sweep process (pipeline.search.lease), tagged on each run it starts
        self.owns_parent = True
        self.clock = Stopwatch()  # MLflow calls on the logging thread
        self.wait_s = 0.0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow")
        self._pending: list[Future] = []

    def _experiment(self, name: str, runs_dir: str, description: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        artifacts = (Path(runs_dir).resolve() / "mlartifacts" / name).as_uri()
        return self.client.create_experiment(
            name,
            artifact_location=artifacts if self.uri.startswith("sqlite") else None,
            tags={
                # Mark the experiment as model training so the UI opens on the runs table.
                "mlflow.experimentKind": "custom_model_development",
                "mlflow.note.content": description,
            },
        )

    # --- the background queue -----------------------------------------------------------------

    def submit(self, fn: Callable[[], Any]) -> None:
        self._pending.append(self._pool.submit(self.clock.timed(lambda: self._attempt(fn))))

    def _attempt(self, fn: Callable[[], Any]) -> None:
        """On the logging thread: ``fn()``, or keep it for later if the server is away (after
        MLflow's retries, or at once while a quick question finds it still away)."""
        from mlflow.exceptions import MlflowException

        if self.missed and not self._answers():
            self.missed.append(fn)
            return
        try:
            fn()
        except (MlflowException, OSError) as e:
            if not _is_http(self.uri):
                raise
            self.missed.append(fn)
            self.missed_reason = _reason(e)
            return
        self._retry_missed()

    def _answers(self) -> bool:
        """Whether the server answers a quick question (asked at most every 5 s)."""
        when, answered = self._last_probe
        if time.monotonic() - when < PROBE_EVERY_S:
            return answered
        try:
            check_reachable(self.uri)
            answered = True
        except LookupError:
            answered = False
        self._last_probe = (time.monotonic(), answered)
        return answered

    def _retry_if_answering(self) -> None:
        self._last_probe = (0.0, False)  # ask now
        if self._answers():
            self._retry_missed()

    def _retry_missed(self) -> None:
        """Log again, in order, what the server missed; stop at the first that fails again."""
        from mlflow.exceptions import MlflowException

        while self.missed:
            try:
                self.missed[0]()
            except (MlflowException, OSError) as e:
                self.missed_reason = _reason(e)
                return
            self.missed.pop(0)

    @property
    def logging_s(self) -> float:
        """Seconds MLflow calls took on the logging thread."""
        return self.clock.seconds

    def flush(self) -> None:
        """Wait for queued logging; re-raise the first error it hit."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    # --- runs ---------------------------------------------------------------------------------

    def start_parent(self, name: str, params: dict[str, Any], tags: dict[str, str]) -> str:
        from mlflow.entities import Param

        run = self.client.create_run(
            self.experiment_id,
            run_name=name,
            tags={"study": self.study_name, "role": "sweep", "worker": self.worker, **tags},
        )
        self.parent_id = run.info.run_id
        self._log(self.parent_id, [Param(k, param_text(v)) for k, v in params.items()])
        return self.parent_id

    def attach_parent(self, run_id: str) -> None:
        """Log child runs under a parent another process started (and will end)."""
        self.parent_id = run_id
        self.owns_parent = False

    def log_trial(
        self, number: int, config: dict[str, Any], result: TrialResult, state: str, curve_every: int
    ) -> None:
        """Queue one child run with params, summary metrics, curves and tags."""

        def log() -> None:
            self._log_trial(number, config, result, state, curve_every)

        log.child_run = True  # counted in close()'s warning
        self.submit(log)

    def _log(self, run_id: str, params: list, metrics: list = ()) -> None:
        for p, m in _batches(params, list(metrics)):
            self.client.log_batch(run_id, params=p, metrics=m)

    def _start_child(
        self, number: int, config: dict, state: str, metrics: dict, more=(), **tags: str
    ) -> Any:
        """A child run of the sweep's parent, named for its trial, with the trial's params,
        summary metrics and the metrics ``more`` (curves); returns its ``RunInfo``."""
        from mlflow.entities import Metric, Param

        run = self.client.create_run(
            self.experiment_id,
            run_name=run_name(config),
            tags={
                "mlflow.parentRunId": self.parent_id,
                "study": self.study_name,
                "trial_number": str(number),
                "trial_state": state,
                "diverged": str(bool(metrics.get("diverged", False))),
                "worker": self.worker,
                **tags,
            },
        )
        run_id = run.info.run_id
        self._child_ids[number] = run_id  # until it is complete (see _log_trial)
        now = int(time.time() * 1000)
        summary = [Metric(k, float(v), now, 0) for k, v in metrics.items() if _finite(v)]
        self._log(run_id, [Param(k, param_text(v)) for k, v in config.items()], [*summary, *more])
        return run.info

    def _log_trial(self, number, config, result, state, curve_every) -> None:
        from mlflow.entities import Metric

        if number in self._child_ids:  # an attempt the server dropped halfway: start afresh
            self.client.delete_run(self._child_ids.pop(number))

        now = int(time.time() * 1000)
        metrics = []
        hit = int(result.metrics.get("steps_to_target", 0)) - 1  # the step the target was reached
        for name, (steps, values) in result.curves.items():
            keep = np.searchsorted(steps, [hit]) if len(steps) else []
            metrics += [
                Metric(name, float(values[i]), now, int(steps[i]))
                for i in curve_indices(len(steps), curve_every, keep)
                if _finite(float(values[i]))
            ]
        metrics += _diagnostic_metrics(result, config, now)
        run = self._start_child(number, config, state, result.metrics, metrics)
        run_id = run.run_id
        if result.diagnostics:
            csv = diagnostics_csv(result)
            _write_text(self.client, run_id, run.artifact_uri, csv, "diagnostics/per_layer.csv")
        self.client.set_terminated(run_id, "FINISHED" if state != "FAIL" else "FAILED")
        del self._child_ids[number]

    def log_parent_artifact(self, path: Path, folder: str | None = None) -> None:
        self.submit(lambda: self.client.log_artifact(self.parent_id, str(path), folder))

    def close(self, status: str = "FINISHED") -> str | None:
        """Drain the queue, end the parent run with ``status`` and stop the thread. Returns a
        warning when a server that went away still has not taken everything."""
        t0 = time.perf_counter()
        try:
            self.flush()
        finally:
            self.wait_s += time.perf_counter() - t0
            if self.parent_id is not None and self.owns_parent:
                parent, self.parent_id = self.parent_id, None
                self.submit(lambda: self.client.set_terminated(parent, status))
                self.parent_id = parent
            if self.missed:  # one more try, if the server answers now
                self._pending.append(self._pool.submit(self._retry_if_answering))
            self.flush()
            self._pool.shutdown(wait=True)
        if not self.missed:
            return None
        children = sum(getattr(fn, "child_run", False) for fn in self.missed)
        from pipeline.config import redacted

        return (
            f"the MLflow server at {redacted(self.uri)} did not take {len(self.missed)} "
            f"logging calls ({children} child runs; {redacted(self.missed_reason)}): every "
            "result is in the study, and the next sweep of this study logs the missing child runs"
        )

    # --- after a crash ------------------------------------------------------------------------

    def runs(self) -> list:
        """Every run of the study's experiment."""
        out, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], max_results=1000, page_token=token)
            out.extend(page)
            token = page.token
            if not token:
                return out

    def reconcile(
        self, trials: list, dead: Callable[[str], bool], spec_of: Callable[[Any], dict]
    ) -> int:
        """Runs of dead workers left RUNNING end KILLED; a finished trial whose worker died before
        its child run was logged gets one now (its stored spec as params, summary metrics, no
        curves, tag recovered=true). Returns how many child runs were logged."""
        runs = self.runs()
        for r in runs:
            if r.info.status == "RUNNING" and dead(r.data.tags.get("worker", "")):
                self.client.set_terminated(r.info.run_id, "KILLED")
        logged = {
            r.data.tags.get("trial_number")
            for r in runs
            if r.info.status == "FINISHED" and "mlflow.parentRunId" in r.data.tags
        }
        missing = [
            t
            for t in trials
            if t.state.name in ("COMPLETE", "PRUNED")
            and str(t.number) not in logged
            and "metrics" in t.user_attrs
            and dead(t.user_attrs.get("lease.worker", ""))
        ]
        for t in missing:
            config = spec_of(t)
            self._log_recovered(t.number, config, t.user_attrs["metrics"], t.state.name)
        return len(missing)

    def _log_recovered(self, number: int, config: dict, metrics: dict, state: str) -> None:
        run_id = self._start_child(number, config, state, metrics, recovered="true").run_id
        self.client.set_terminated(run_id, "FINISHED")
        del self._child_ids[number]


def find_trial_run(client, experiment_id: str, number: int) -> str | None:
    """The MLflow run id of a study's trial (the latest, if the trial was logged twice)."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.trial_number = '{number}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def latest_parent(client, experiment_id: str) -> str | None:
    runs = client.search_runs(
        [experiment_id],
        filter_string="tags.role = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def runs_table_url(host: str, port: int, experiment_id: str | None) -> str:
    """The MLflow UI's runs table of an experiment (its start page when there is none yet)."""
    if experiment_id is None:
        return f"http://{host}:{port}/"
    return f"http://{host}:{port}/#/experiments/{experiment_id}{RUNS_TABLE_QUERY}"


def experiment_id(uri: str, name: str) -> str | None:
    """The id of the MLflow experiment of study ``name`` in the store ``uri``, if it exists;
    it gets the study's runs-table view if it has none yet (an experiment of an older sweep)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return None
    if f"mlflow.sharedViewState.{VIEW_KEY}" not in experiment.tags:
        share_view(client, experiment.experiment_id, VIEW_PARAMS)
    return experiment.experiment_id


def share_view(client, experiment_id: str, params: Iterable[str]) -> None:
    """The view ``make ui``'s address opens: child runs sorted by steps_to_target (fastest
    first; a sorted table lists runs flat), the two key metrics and ``params`` as columns, and
    none of MLflow's empty default columns (Dataset, Source, Models)."""
    columns = [f"metrics.`{m}`" for m in VIEW_METRICS] + [f"params.`{p}`" for p in params]
    state = {
        "orderByKey": "metrics.`steps_to_target`",
        "orderByAsc": True,
        "searchFilter": "",
        "selectedColumns": columns,
    }
    client.set_experiment_tag(
        experiment_id, f"mlflow.sharedViewState.{VIEW_KEY}", json.dumps(state)
    )


def open_tracker(
    cfg, space: Space, experiment: str | None, worker: str = "", parent_run: str | None = None
) -> Tracker | None:
    if not cfg.tracking.enabled:
        return None
    tracker = Tracker(
        cfg.tracking.uri or default_uri(cfg.runs_dir),
        cfg.study.name,
        cfg.runs_dir,
        description=f"Weight-initialization sweep `{cfg.study.name}`: one child run per Optuna "
        "trial; sort by steps_to_target (lower is faster).",
    )
    tracker.worker = worker
    if parent_run is not None:  # a worker of `sweep --workers N`: the launcher owns the parent
        tracker.attach_parent(parent_run)
        return tracker
    params = study_params(cfg, space)
    searched = [k.removeprefix("space.") for k in params if k.startswith("space.")]
    share_view(tracker.client, tracker.experiment_id, searched or VIEW_PARAMS)
    tracker.start_parent(
        f"sweep {datetime.now():%Y-%m-%d %H:%M:%S}",
        params,
        {"experiment": experiment or "default", "sampler": cfg.study.sampler},
    )
    return tracker


def study_params(cfg, space: Space) -> dict[str, Any]:
    """The parent run's params: what the study is, not the base values no trial used. A
    searched key appears as ``space.<key>`` (its list or range); every other trial key with the
    value all trials share; then the study's own settings (``study.*``, ``engine.*``, ...)."""
    from pipeline.config import RUN_KEYS

    flat = redacted(to_flat_dict(cfg))
    searched = space.searched()
    out = {f"space.{k}": v for k, v in space.entries.items() if k in searched}
    fixed = space.fixed()
    for k in RUN_KEYS:
        if k not in searched:
            out[k] = fixed.get(k, flat[k])
    out.update({k: v for k, v in flat.items() if k not in RUN_KEYS})
    return out
