"""What Optuna samples: the search space from ``conf/`` turned into ``trial.suggest_*`` calls.

Optuna parameter names are the dotted config keys, so a trial's params, its config and its MLflow
params all use the same names.
"""

from __future__ import annotations

from typing import Any

import optuna

from pipeline.config.schema import PRUNERS, SAMPLERS
from pipeline.config.space import Space
from pipeline.core.names import check_registry


def suggest(trial: optuna.Trial, space: Space) -> dict[str, Any]:
    """Sample every entry of the space; scalars are fixed values (in the trial's spec, not
    Optuna parameters)."""
    values: dict[str, Any] = {}
    for key, spec in space.items():
        if isinstance(spec, list):
            values[key] = space.decode(key, trial.suggest_categorical(key, space.choices(key)))
        elif isinstance(spec, dict):
            low, high = spec["low"], spec["high"]
            if isinstance(low, int) and isinstance(high, int):
                values[key] = trial.suggest_int(
                    key, low, high, step=spec.get("step", 1), log=bool(spec.get("log"))
                )
            else:
                values[key] = trial.suggest_float(
                    key, float(low), float(high), step=spec.get("step"), log=bool(spec.get("log"))
                )
        else:
            values[key] = spec
    return values


class AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler for ask-and-tell loops: Optuna's calls ``study.stop()`` once the grid is
    exhausted, which only works inside ``study.optimize``; here ``study.n_trials`` ends it."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


# One factory per name of ``study.sampler`` (the schema's SAMPLERS): (seed, space) -> sampler.
SAMPLER_FACTORIES = {
    # constant_liar keeps the trials of one batch apart while they are all still running.
    "tpe": lambda seed, space: optuna.samplers.TPESampler(
        seed=seed, multivariate=True, constant_liar=True
    ),
    "random": lambda seed, space: optuna.samplers.RandomSampler(seed=seed),
    "grid": lambda seed, space: AskTellGridSampler(
        {k: space.choices(k) for k in space.lists()}, seed=seed
    ),
    "cmaes": lambda seed, space: optuna.samplers.CmaEsSampler(
        seed=seed, warn_independent_sampling=False
    ),
    "gp": lambda seed, space: optuna.samplers.GPSampler(seed=seed),
    "nsgaii": lambda seed, space: optuna.samplers.NSGAIISampler(seed=seed),
}
check_registry(SAMPLER_FACTORIES, SAMPLERS)
# One factory per name of ``study.pruner`` (the schema's PRUNERS).
PRUNER_FACTORIES = {
    "none": optuna.pruners.NopPruner,
    "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=8, n_warmup_steps=1),
    "hyperband": optuna.pruners.HyperbandPruner,
}
check_registry(PRUNER_FACTORIES, PRUNERS)


def make_sampler(name: str, seed: int, space: Space) -> optuna.samplers.BaseSampler:
    """The sampler ``study.sampler`` names, seeded by ``study.seed``."""
    if name not in SAMPLER_FACTORIES:
        raise ValueError(f"unknown sampler {name!r}")
    return SAMPLER_FACTORIES[name](seed, space)


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """The pruner ``study.pruner`` names (``none``: Optuna's NopPruner)."""
    return PRUNER_FACTORIES.get(name, PRUNER_FACTORIES["none"])()
