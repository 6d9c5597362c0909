"""Tracking: every MLflow write (``tracker``), the parent run's artifacts and figures
(``artifacts``, ``plots``), what a study prints or renders (``report``, ``html_report``), and
the coordinate check (``coord_check``: width sweeps of a few training steps, their slopes and
figure)."""

from pipeline.tracking.tracker import (
    LOGGING_RETRIES,
    RUNS_TABLE_QUERY,
    Tracker,
    check_reachable,
    default_uri,
    experiment_id,
    find_trial_run,
    latest_parent,
    open_tracker,
    run_name,
    runs_table_url,
)

__all__ = [
    "LOGGING_RETRIES",
    "RUNS_TABLE_QUERY",
    "Tracker",
    "check_reachable",
    "default_uri",
    "experiment_id",
    "find_trial_run",
    "latest_parent",
    "open_tracker",
    "run_name",
    "runs_table_url",
]
