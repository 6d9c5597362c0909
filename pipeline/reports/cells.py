"""Each completed trial as the figures read it, grouped per network: its initializer, gain,
learning rate, per-seed steps and what theory says of its scale.

The answer per network (``recommend``) reads the study as arms and points
(``pipeline.search.arms``); the figures plot every trial, so they read it here.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Iterable
from typing import Any, NamedTuple

import optuna

from pipeline.search.arms import CELL_KEYS, network_label
from pipeline.search.study import ranked_trials, trial_metrics, trial_seed_steps, trial_spec

# Structural keys that name a network too, where the study's trials differ in them.
NETWORK_KEYS = ("model.width", "model.norm", "model.heads", "model.attention_scale")

__all__ = ["CELL_KEYS", "NETWORK_KEYS", "Trial", "family", "network_label", "study_cells"]

# Initializer families: one name per idea, whatever the distribution or alias.
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


class Trial(NamedTuple):
    """What a figure reads of one completed trial."""

    init: str  # initializer family, or a framework default's own name
    gain: float  # init.gain as a number (auto resolved)
    learning_rate: float
    seed_steps: tuple[float, ...]  # steps to target per seed, never = steps + 1
    steps: int  # train.steps: beyond it is "never"
    sigma_w2: float | None  # predict.trial_variances: what the gain means to mean-field theory
    sigma_b2: float | None
    activation: str
    negative_slope: float
    objective: float

    @property
    def median(self) -> float:
        return statistics.median(self.seed_steps)


def group_name(weights: str) -> str:
    """The group a trial is drawn in: its family, or a framework default's own name."""
    return family(weights)


def network_keys(specs: Iterable) -> tuple[str, ...]:
    """``CELL_KEYS`` and each of ``NETWORK_KEYS`` the specs differ in."""
    specs = list(specs)
    varying = tuple(k for k in NETWORK_KEYS if len({repr(s[k]) for s in specs}) > 1)
    return (*CELL_KEYS, *varying)


def study_cells(study: optuna.Study) -> dict[tuple, list[Trial]]:
    """The study's completed trials per network: (structural key, value) pairs -> trials."""
    from pipeline.core.initializers import resolve_gain
    from pipeline.core.predict import trial_variances

    specs = [(t, trial_spec(study, t)) for t in ranked_trials(study)]
    keys = network_keys(s for _, s in specs)
    cells: dict[tuple, list[Trial]] = {}
    for t, s in specs:
        cell = tuple((k, s[k]) for k in keys)
        activation, slope = s["model.activation"], s["model.negative_slope"]
        gain = resolve_gain(s.init.weights, s["init.gain"], activation, slope)
        variances = trial_variances(s) or (None, None)
        steps = tuple(min(v, s.train.steps + 1) for v in trial_seed_steps(t))
        cells.setdefault(cell, []).append(
            Trial(
                group_name(s.init.weights),
                gain,
                float(s["train.learning_rate"]),
                steps,
                s.train.steps,
                *variances,
                activation,
                slope,
                trial_metrics(t).get("objective", math.inf),
            )
        )
    return cells


@functools.cache
def _critical_sigma_w2(activation: str, sigma_b2: float, slope: float) -> float | None:
    from pipeline.core.theory import critical_sigma_w2

    try:
        return critical_sigma_w2(activation, sigma_b2, slope)
    except ValueError:  # no chi1 = 1 in the bracket (e.g. identity with a bias)
        return None


def critical_sigma_w2(activation: str, sigma_b2: float, slope: float) -> float | None:
    """Mean-field theory's sigma_w^2 at the edge of chaos (chi1 = 1; Poole et al. 2016,
    Schoenholz et al. 2017) for sigma_b^2 at 4 significant digits; root-finding costs about a
    second, so once per (activation, sigma_b^2, slope)."""
    return _critical_sigma_w2(activation, float(f"{sigma_b2:.4g}"), slope)


def critical_gain(trial: Trial) -> float | None:
    """The gain at which theory puts this trial's initializer at the edge of chaos for its own
    sigma_b^2: sigma_w^2 is proportional to gain^2, so gain * sqrt(sigma_w2* / sigma_w2)."""
    if not trial.sigma_w2:
        return None
    critical = critical_sigma_w2(trial.activation, trial.sigma_b2, trial.negative_slope)
    return None if critical is None else trial.gain * math.sqrt(critical / trial.sigma_w2)


def scale_to_critical(spec: Any) -> float | None:
    """sigma_w^2 / sigma_w^2* of a trial: its weight scale on theory's common axis (1 = the edge
    of chaos); None where theory has no prediction (a user's module, a transformer)."""
    from pipeline.core.predict import trial_variances

    variances = trial_variances(spec)
    if not variances or not variances[0]:
        return None
    sigma_w2, sigma_b2 = variances
    critical = critical_sigma_w2(spec.model.activation, sigma_b2, spec.model.negative_slope)
    return None if not critical else sigma_w2 / critical
