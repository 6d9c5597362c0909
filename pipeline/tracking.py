"""MLflow: one experiment per study, one parent run per sweep, one child run per trial.

All MLflow calls run on one background thread, so logging a finished batch overlaps with
training the next one; ``Tracker.close`` waits for the queue and reports the seconds spent.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pipeline.metrics import TrialResult, diagnostic_scalars, diagnostics_csv
from pipeline.timing import Stopwatch

RUNS_TABLE_QUERY = "?workflowType=machine_learning"  # MLflow 3 opens GenAI views otherwise


def default_uri(runs_dir: str) -> str:
    return f"sqlite:///{Path(runs_dir).resolve() / 'mlflow.db'}"


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

        self.client = MlflowClient(tracking_uri=uri)
        self.uri = uri
        self.study_name = study_name
        self.experiment_id = self._experiment(study_name, runs_dir, description)
        self.parent_id: str | None = None
        self.worker = ""  # the sweep process (pipeline.lease), tagged on each run it starts
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
        self._pending.append(self._pool.submit(self.clock.timed(fn)))

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
        self._log(self.parent_id, [Param(k, str(v)) for k, v in params.items()])
        return self.parent_id

    def attach_parent(self, run_id: str) -> None:
        """Log child runs under a parent another process started (and will end)."""
        self.parent_id = run_id
        self.owns_parent = False

    def log_trial(
        self, number: int, config: dict[str, Any], result: TrialResult, state: str, curve_every: int
    ) -> None:
        """Queue one child run with params, summary metrics, curves and tags."""
        self.submit(lambda: self._log_trial(number, config, result, state, curve_every))

    def _log(self, run_id: str, params: list, metrics: list = ()) -> None:
        for p, m in _batches(params, list(metrics)):
            self.client.log_batch(run_id, params=p, metrics=m)

    def _start_child(
        self, number: int, config: dict, state: str, metrics: dict, more=(), **tags: str
    ) -> str:
        """A child run of the sweep's parent, named for its trial, with the trial's params,
        summary metrics and the metrics ``more`` (curves); returns its id."""
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
        now = int(time.time() * 1000)
        summary = [Metric(k, float(v), now, 0) for k, v in metrics.items() if _finite(v)]
        self._log(run_id, [Param(k, str(v)) for k, v in config.items()], [*summary, *more])
        return run_id

    def _log_trial(self, number, config, result, state, curve_every) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = []
        for name, (steps, values) in result.curves.items():
            every = curve_every if len(steps) > 20 else 1
            metrics += [
                Metric(name, float(v), now, int(s))
                for s, v in zip(steps[::every], values[::every])
                if _finite(float(v))
            ]
        metrics += _diagnostic_metrics(result, config, now)
        run_id = self._start_child(number, config, state, result.metrics, metrics)
        if result.diagnostics:
            self.client.log_text(run_id, diagnostics_csv(result), "diagnostics/per_layer.csv")
        self.client.set_terminated(run_id, "FINISHED" if state != "FAIL" else "FAILED")

    def log_parent_artifact(self, path: Path, folder: str | None = None) -> None:
        self.submit(lambda: self.client.log_artifact(self.parent_id, str(path), folder))

    def close(self, status: str = "FINISHED") -> None:
        """Drain the queue, end the parent run with ``status`` and stop the thread."""
        t0 = time.perf_counter()
        try:
            self.flush()
        finally:
            self.wait_s += time.perf_counter() - t0
            if self.parent_id is not None and self.owns_parent:
                self.client.set_terminated(self.parent_id, status)
            self._pool.shutdown(wait=True)

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

    def reconcile(self, trials: list, dead: Callable[[str], bool], base: dict[str, Any]) -> int:
        """Runs of dead workers left RUNNING end KILLED; a finished trial whose worker died before
        its child run was logged gets one now (summary metrics, no curves, tag recovered=true).
        Returns how many child runs were logged."""
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
            config = {**base, **t.params}
            self._log_recovered(t.number, config, t.user_attrs["metrics"], t.state.name)
        return len(missing)

    def _log_recovered(self, number: int, config: dict, metrics: dict, state: str) -> None:
        run_id = self._start_child(number, config, state, metrics, recovered="true")
        self.client.set_terminated(run_id, "FINISHED")


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


def runs_table_url(host: str, port: int, experiment_id: str) -> str:
    return f"http://{host}:{port}/#/experiments/{experiment_id}{RUNS_TABLE_QUERY}"
