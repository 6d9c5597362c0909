"""Tracking: every MLflow write (``tracker``) and the parent run's config and trials table
(``artifacts``). What a finished study shows (figures, reports, recommendations) is
``pipeline.reports``, a layer above the sweep."""

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
