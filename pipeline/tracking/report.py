"""Terminal output of a study: the top configurations, best first, and a verdict per family."""

from __future__ import annotations

import math
import statistics

import optuna
from rich.table import Table

from pipeline.search.study import ranked_trials, trial_metrics, trial_spec

COLUMNS = {
    "model.activation": "activation",
    "model.depth": "depth",
    "init.weights": "init",
    "init.gain": "gain",
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


def best_table(study: optuna.Study, top_k: int) -> Table:
    """The top trials; "never" for a trial that missed the target in its own spec's steps. A
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
    for rank, (trial, spec) in enumerate(top):
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


# Initializer families for the verdict: one name per idea, whatever the distribution or alias.
FAMILY_PREFIXES = {
    "he_": "he",
    "kaiming_": "he",
    "glorot_": "glorot",
    "xavier_": "glorot",
    "lecun_": "lecun",
}
FAMILY_NAMES = {
    "normal": "random",  # fixed-scale draws: init.std / init.limit, no fan
    "truncated_normal": "random",
    "uniform": "random",
    "zeros": "constant",
    "constant": "constant",
}


def family(weights: str) -> str:
    """The family of an initializer: he, glorot, lecun, orthogonal, random, constant, ..."""
    for prefix, name in FAMILY_PREFIXES.items():
        if weights.startswith(prefix):
            return name
    return FAMILY_NAMES.get(weights, weights)


def family_verdicts(study: optuna.Study) -> list[str]:
    """One line per initializer family over the study's completed trials, fastest first:
    trials, median steps to target (the upper median: "never" when half or more missed it),
    share that reached the target (each in its own spec's steps), share with at least one
    exploding step."""
    groups: dict[str, list[tuple[dict, float]]] = {}
    members: dict[str, set[str]] = {}
    for trial in ranked_trials(study):
        spec, m = trial_spec(study, trial), trial_metrics(trial)
        weights = spec.init.weights
        groups.setdefault(family(weights), []).append((m, reached(m, spec.train.steps)))
        members.setdefault(family(weights), set()).add(weights)
    rows = []
    for name, pairs in groups.items():
        metrics, hits = [m for m, _ in pairs], [h for _, h in pairs]
        median = statistics.median_high(hits)  # a real trial's value, never half "never"
        share = sum(h < math.inf for h in hits) / len(hits)
        exploded = sum(m.get("explosion_count", 0) > 0 for m in metrics) / len(metrics)
        # Ties (all "never") go to the family that got closer to the target: the objective.
        progress = statistics.median(m.get("objective", math.inf) for m in metrics)
        rows.append((median, progress, exploded, name, len(metrics), share))
    lines = []
    for median, _, exploded, name, n, share in sorted(rows):
        shown = f"{median:.0f}" if median < math.inf else "never"
        lines.append(
            f"{name:<13} {n:>4} trials: median steps to target {shown:>5}, "
            f"{share:4.0%} reached target, {exploded:4.0%} exploded "
            f"({', '.join(sorted(members[name]))})"
        )
    return lines
