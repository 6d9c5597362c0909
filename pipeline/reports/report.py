"""Terminal output of a study: the top single trials, best first; initializer families."""

from __future__ import annotations

import math

import optuna
from rich.table import Table

from pipeline.search.study import ranked_trials, trial_metrics, trial_spec

COLUMNS = {
    "model.activation": "activation",
    "model.depth": "depth",
    "init.weights": "init",
    "init.gain": "gain",
    "train.learning_rate": "learning rate",
}


def _fmt(value) -> str:
    if value is None:  # not measured (a regression has no accuracy)
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def reached(metrics: dict, steps: int) -> float:
    """A trial's steps to target, or ``inf`` when it never got there in its ``steps``."""
    hit = metrics.get("steps_to_target", math.inf)
    return hit if hit <= steps else math.inf


def rules_text(rules: list) -> str:
    """``init.rules`` in one cell: ``glob: key=value, ...; ...`` ("-" for none)."""
    parts = [
        f"{r['match']}: " + ", ".join(f"{k}={v}" for k, v in r.items() if k != "match")
        for r in rules
    ]
    return "; ".join(parts) or "-"


def answer_lines(document: dict) -> list[str]:
    """What `make best` wrote first: per network, the rank of its recommended arm, at which
    learning rate, with which basin; the networks with nothing to recommend."""
    from pipeline.reports.recommend import lr_text, span_text

    answers = [c for c in document["configs"] if c.get("source") == "recommendation"]
    lines = [f"the answer per network (study {document['study']}; `recommend`: every number):"]
    for entry in answers:
        a = entry["answer"]
        basin = span_text(a["lr_basin"]) if a["lr_basin"] else "none where every seed reached it"
        lines.append(
            f"  rank {entry['rank']}  {a['network']}: {a['arm']} at LR "
            f"{lr_text(a['learning_rate'])} (basin {basin}; trial {entry['provenance']['trial']})"
        )
    for missing in document.get("not_recommended", []):
        lines.append(f"  {missing['network']}: no entry: {missing['summary']}")
    if answers:
        lines.append(f"then the top single trials, from rank {len(answers)}:")
    return lines


def best_table(study: optuna.Study, top_k: int, first_rank: int = 0) -> Table:
    """The top trials, ranked from ``first_rank`` (their rank in the best file, after the
    answer's entries); "never" for a trial that missed the target in its own spec's steps. A
    column of per-parameter rules appears when some trial has them."""
    table = Table(title=f"study {study.study_name}: top {top_k} of {len(study.trials)} trials")
    top = [(t, trial_spec(study, t)) for t in ranked_trials(study)[:top_k]]
    with_rules = any(spec.init.rules for _, spec in top)
    # A regression has no accuracy: its validation score is its loss.
    regression = all(spec.data.task == "regression" for _, spec in top)
    score, score_key = (
        ("val loss", "final_val_loss") if regression else ("val acc", "final_val_accuracy")
    )
    names = ("rank", "trial", "steps to target", "explosions", score, *COLUMNS.values())
    for name in (*names, "rules") if with_rules else names:
        left = name in ("activation", "init", "rules")
        table.add_column(name, justify="left" if left else "right")
    for rank, (trial, spec) in enumerate(top, start=first_rank):
        m = trial_metrics(trial)
        hit = reached(m, spec.train.steps)
        table.add_row(
            str(rank),
            str(trial.number),
            _fmt(m.get("steps_to_target")) if hit < math.inf else "never",
            _fmt(m.get("explosion_count")),
            _fmt(m.get(score_key)),
            *(_fmt(spec[k]) for k in COLUMNS),
            *([rules_text(spec.init.rules)] if with_rules else []),
        )
    return table
