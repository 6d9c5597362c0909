"""Terminal tables of a study: the top configurations, best first."""

from __future__ import annotations

import optuna
from rich.table import Table

from pipeline.study import ranked_trials, trial_metrics

COLUMNS = {
    "model.activation": "activation",
    "model.depth": "depth",
    "init.weights": "init",
    "init.gain": "gain",
}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def best_table(study: optuna.Study, top_k: int, steps: int) -> Table:
    table = Table(title=f"study {study.study_name}: top {top_k} of {len(study.trials)} trials")
    for name in ("rank", "trial", "steps to target", "explosions", "val acc", *COLUMNS.values()):
        table.add_column(name, justify="left" if name in ("activation", "init") else "right")
    for rank, trial in enumerate(ranked_trials(study)[:top_k]):
        m = trial_metrics(trial)
        reached = m.get("steps_to_target", steps + 1) <= steps
        table.add_row(
            str(rank),
            str(trial.number),
            _fmt(m.get("steps_to_target")) if reached else "never",
            _fmt(m.get("explosion_count")),
            _fmt(m.get("final_val_accuracy")),
            *(_fmt(trial.params.get(k, "")) for k in COLUMNS),
        )
    return table
