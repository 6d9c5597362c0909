"""``study.design=grid``: every arm of every network on one shared learning-rate grid.

The grid is log-spaced, ``study.grid_per_decade`` points per decade anchored at powers of ten
(4: 0.001, 0.00178, 0.00316, 0.00562, 0.01, ...), over ``space.train.learning_rate``. Every
combination of the space's lists (networks x arms) is enqueued at every point, so each arm is
tuned on the same learning rates with the same seeds. When the queue is empty, each arm whose
basin is still open at an end (``pipeline.core.estimate.open_sides``: a seed reached the target
at the end tried; or, for an arm that reached it nowhere, the end did (low) or did not (high)
diverge) gets the next point of the same lattice there, never past ``study.grid_limits``; an
arm whose end already failed gains nothing from more points beyond it. Optuna still
drives the study: the points are enqueued trials that the sweep asks in batches, and each
trial's parameters are recorded as a sampler's would be.
"""

from __future__ import annotations

import math

import optuna

from pipeline.config import Space
from pipeline.core.estimate import open_sides
from pipeline.search.arms import LR, study_networks

LIVE = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.RUNNING,
    optuna.trial.TrialState.WAITING,
)


def grid_index(lr: float, per_decade: int) -> int:
    """The grid point nearest ``lr``: ``lr`` is about 10^(index / per_decade)."""
    return round(per_decade * math.log10(lr))


def grid_value(index: int, per_decade: int) -> float:
    """10^(index / per_decade) at 4 significant digits, the value a trial records."""
    return float(f"{10 ** (index / per_decade):.4g}")


def initial_rates(low: float, high: float, per_decade: int) -> list[float]:
    """The grid's points from ``low`` to ``high`` (both inside, to 0.1% of a step)."""
    first = math.ceil(per_decade * math.log10(low) - 1e-3)
    last = math.floor(per_decade * math.log10(high) + 1e-3)
    return [grid_value(k, per_decade) for k in range(first, last + 1)]


def search_space(cfg, space: Space) -> Space:
    """The space the sweep suggests from under the grid: the learning rate's range widened to
    ``study.grid_limits`` (every enqueued value lies inside it, extensions included)."""
    low, high = (float(v) for v in cfg.study.grid_limits)
    entries = dict(space.entries)
    entries[LR] = {"low": low, "high": high, "log": True}
    return Space.parse(entries)


def _combinations(space: Space) -> list[dict]:
    """Every combination of the space's lists, as Optuna params (encoded choices)."""
    combos: list[dict] = [{}]
    for key in space.lists():
        combos = [{**c, key: choice} for c in combos for choice in space.choices(key)]
    return combos


def _planned(study: optuna.Study) -> set[tuple]:
    """The params of every trial that is or will be measured (failed ones are re-enqueued)."""
    return {
        tuple(sorted(_params(t).items())) for t in study.get_trials(deepcopy=False, states=LIVE)
    }


def _params(trial: optuna.trial.FrozenTrial) -> dict:
    """A trial's params, those of a waiting trial included (its fixed params)."""
    fixed = trial.system_attrs.get("fixed_params") or {}
    return {**fixed, **trial.params}


def _enqueue(study: optuna.Study, wanted: list[dict], cap: int) -> int:
    """Enqueue the ``wanted`` params not planned yet, in order, while the study's live trials
    stay within ``cap`` (``study.n_trials``: a capped grid leaves nothing queued beyond it)."""
    planned = _planned(study)
    room = cap - len(planned)
    added = 0
    for params in wanted:
        key = tuple(sorted(params.items()))
        if added >= room:
            break
        if key not in planned:
            study.enqueue_trial(params, skip_if_exists=False)
            planned.add(key)
            added += 1
    return added


def plan(study: optuna.Study, cfg, space: Space) -> int:
    """Enqueue every grid point not measured or queued yet: the learning rates nearest the
    middle of the range first, so a capped study (``study.n_trials``) still tunes every arm on
    the same points. Returns how many trials were added."""
    lr = space.get(LR)
    rates = initial_rates(float(lr["low"]), float(lr["high"]), cfg.study.grid_per_decade)
    middle = (len(rates) - 1) / 2
    rates = sorted(rates, key=lambda r: (abs(rates.index(r) - middle), r))
    combos = _combinations(space)
    return _enqueue(study, [{**c, LR: r} for r in rates for c in combos], cfg.study.n_trials)


def extend(study: optuna.Study, cfg) -> int:
    """Grow each network's grid by one point on every side where an arm's basin is still open
    (module docstring); returns how many trials were enqueued (0: the grid is closed)."""
    per_decade = cfg.study.grid_per_decade
    low, high = (float(v) for v in cfg.study.grid_limits)
    wanted = []
    for network in study_networks(study):
        for arm, points in network.arms.items():
            rates = sorted(p.lr for p in points)
            below = grid_value(grid_index(rates[0], per_decade) - 1, per_decade)
            above = grid_value(grid_index(rates[-1], per_decade) + 1, per_decade)
            lo_open, hi_open = open_sides(points)
            if lo_open and below >= low * (1 - 1e-9):
                wanted.append({**network.params[arm], LR: below})
            if hi_open and above <= high * (1 + 1e-9):
                wanted.append({**network.params[arm], LR: above})
    return _enqueue(study, wanted, cfg.study.n_trials)


def waiting(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
