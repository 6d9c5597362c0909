"""The sweep's parent-run files: the resolved config and the trials table.

The figures of a finished study are the reports' (``pipeline.reports.figures``), which the
command passes to the sweep so that the sweep loop never imports the analysis above it.
"""

from __future__ import annotations

from pathlib import Path

import optuna
from omegaconf import OmegaConf

from pipeline.config import redacted
from pipeline.tracking.tracker import Tracker


def log_run_files(cfg, study: optuna.Study, tracker: Tracker) -> Path:
    """The resolved config and the trials table, written under ``runs/<study>/`` and logged to
    the parent run; returns that folder."""
    out = Path(cfg.runs_dir) / cfg.study.name
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "config.yaml"
    config_path.write_text(redacted(OmegaConf.to_yaml(cfg)))
    tracker.log_parent_artifact(config_path)
    table_path = out / "trials.csv"
    study.trials_dataframe().to_csv(table_path, index=False)
    tracker.log_parent_artifact(table_path)
    return out
