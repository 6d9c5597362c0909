"""What a study estimates per network and arm, and how sure: pure NumPy on per-seed results.

An *arm* is an initializer as it is defined (its formula, gain and bias); a *point* is one
learning rate (one tuning point) at which an arm was trained with ``train.seeds`` seeds, the
same seeds for every arm and point (the engine's seed index picks the initial key and the
mini-batch order). A seed's *steps* are its steps to target, ``inf`` when it never reached the
target within the budget ``train.steps``. The estimands, one sentence each:

- ``steps`` (T*): the median over seeds of the steps to target at the arm's best learning rate
  among those tried (``best_lr``, LR*: the point with the lowest median among those where every
  seed reached the target, or among all when none did).
- ``steps_ci``: a 95% interval of T* from a bootstrap that resamples the seeds within every point
  and re-selects LR* in every replicate, so it accounts for choosing LR* on the same data.
- ``ratio_to_best``: T*(arm) / T*(best arm), the best arm re-selected in every replicate, with its
  interval ``ratio_ci``; ``p_best``: the share of replicates in which the arm is the fastest.
- ``basin``: the learning rates (a run of adjacent points tried) at which every seed reached the
  target, around the arm's fastest such point, and its width in decades (``basin_decades``);
  ``basin_two_thirds`` likewise with at least two thirds of the seeds; ``within_1_5x``: the run
  around LR* whose median is within 1.5x of T*; ``divergence_lr``: the smallest learning rate at
  which at least half the seeds diverged (a NaN/Inf loss or a final loss above the initial one).
- ``fails``: no seed reached the target at any learning rate tried; ``steps_censored``: T* is
  only bounded (more than half the seeds at LR* never got there: at least ``budget + 1``).

The bootstrap resamples seed indices, the same resampled seeds at every point of every arm: the
seeds are common to the whole design (common random numbers), so arms are compared seed for seed
as in a paired test. It is *smoothed* (Silverman & Young 1987, "The bootstrap: to smooth or not
to smooth?", Biometrika 74; Hall, DiCiccio & Romano 1989, "On smoothing and the bootstrap", Ann.
Statist. 17): with 3-5 seeds a plain bootstrap of a median can only return the seeds' own values,
so each resampled value is multiplied by exp(h z), z ~ N(0, 1), with h the pooled within-point
standard deviation of log steps (over the network's points where every seed reached the target)
over sqrt(n), which restores the variance of one draw. Percentile intervals (Efron & Tibshirani
1993, ch. 13). Calibrated by simulation in tests/unit/test_estimate.py: over synthetic studies
from a known model (3 and 5 seeds, seed effects shared or not), the intervals of T* and of the ratio
cover the truth in 90-98% of them.

The recommendation is the *set* of arms that tie with the best: those whose ``ratio_ci`` reaches
down to 1 (the data cannot tell them from the best) or whose ratio is at most 1 + ``TIE_MARGIN``
(10%: too close to matter), ordered by the widest basin (the tie-break), then T*.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

LEVEL = 0.95
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0
TIE_MARGIN = 0.10  # a ratio up to 1.1 is a tie with the best, whatever its interval
TWO_THIRDS = 2 / 3
WITHIN = 1.5  # the ``within_1_5x`` range: median at most this times T*


@dataclass(frozen=True)
class Point:
    """One learning rate of one arm: per seed, steps to target (inf = never) and divergence."""

    lr: float
    steps: tuple[float, ...]
    diverged: tuple[bool, ...] = ()
    trials: tuple[int, ...] = ()  # the study's trial numbers measured here
    extra: tuple = ()  # other tuned values, (key, value) pairs (a gain drawn from a range)

    @property
    def median(self) -> float:
        return float(np.median(self.steps))

    @property
    def reached(self) -> float:
        """Share of seeds that reached the target."""
        return float(np.mean(np.isfinite(self.steps)))

    @property
    def diverged_share(self) -> float:
        return float(np.mean(self.diverged)) if self.diverged else 0.0


@dataclass
class ArmEstimate:
    """One arm on one network (see the module docstring for what each number estimates)."""

    arm: str
    lrs_tried: list[float]
    fails: bool
    best_lr: float | None = None
    best_lr_at_edge: bool = False
    steps: float | None = None
    steps_ci: list[float | None] | None = None
    steps_censored: bool = False
    ratio_to_best: float | None = None
    ratio_ci: list[float | None] | None = None
    ratio_censored: bool = False
    p_best: float | None = None
    basin: list[float] | None = None
    basin_decades: float | None = None
    basin_two_thirds: list[float] | None = None
    within_1_5x: list[float] | None = None
    divergence_lr: float | None = None
    best_point: Point | None = field(default=None, repr=False)


@dataclass
class NetworkEstimate:
    arms: dict[str, ArmEstimate]
    recommended: list[str]  # the tie set, tie-break order; empty when nothing trains
    baseline: dict | None
    budget: int
    seeds: int  # seeds per point (the most any point has)
    bandwidth: float  # the smoothing h on log steps (0: no interval)


# --- one arm, no resampling ----------------------------------------------------------------------


def best_index(points: Sequence[Point]) -> int:
    """LR*: the point with the lowest median among those where every seed reached the target
    (a rate that loses a seed is not the one to use), or among all points when none did; ties:
    more seeds reached, the lower mean of log steps, then the smaller learning rate."""
    reliable = [i for i, p in enumerate(points) if p.reached == 1.0]

    def key(i: int):
        p = points[i]
        finite = [s for s in p.steps if math.isfinite(s)]
        mean_log = float(np.mean(np.log(finite))) if finite else math.inf
        return (p.median, -p.reached, mean_log, p.lr)

    return min(reliable or range(len(points)), key=key)


def _runs(flags: Sequence[bool]) -> list[tuple[int, int]]:
    """Maximal runs of adjacent True flags, as (first, last) indices."""
    out, start = [], None
    for i, f in enumerate([*flags, False]):
        if f and start is None:
            start = i
        elif not f and start is not None:
            out.append((start, i - 1))
            start = None
    return out


def _run_around(points: Sequence[Point], ok: Sequence[bool], anchor: int | None) -> list | None:
    """The learning-rate span of the run of ``ok`` points that holds ``anchor``; with no anchor,
    the run holding the ``ok`` point of lowest median. None when no point is ok."""
    runs = _runs(ok)
    if not runs:
        return None
    if anchor is None or not ok[anchor]:
        candidates = [i for i, f in enumerate(ok) if f]
        anchor = min(candidates, key=lambda i: (points[i].median, points[i].lr))
    first, last = next((a, b) for a, b in runs if a <= anchor <= b)
    return [points[first].lr, points[last].lr]


def describe_arm(name: str, points: Sequence[Point], budget: int) -> ArmEstimate:
    """Everything of one arm that needs no resampling: LR*, T*, basins, divergence."""
    points = sorted(points, key=lambda p: p.lr)
    lrs = [p.lr for p in points]
    fails = not any(np.isfinite(p.steps).any() for p in points)
    est = ArmEstimate(name, lrs, fails)
    diverging = [p.lr for p in points if p.diverged_share >= 0.5]
    est.divergence_lr = diverging[0] if diverging else None
    if fails:
        return est
    i = best_index(points)
    best = points[i]
    est.best_point = best
    est.best_lr = best.lr
    est.best_lr_at_edge = len(points) > 1 and i in (0, len(points) - 1)
    est.steps_censored = not math.isfinite(best.median)
    est.steps = float(budget + 1) if est.steps_censored else best.median
    all_reach = [p.reached == 1.0 for p in points]
    est.basin = _run_around(points, all_reach, i)
    if est.basin is not None:
        est.basin_decades = math.log10(est.basin[1] / est.basin[0])
    est.basin_two_thirds = _run_around(points, [p.reached >= TWO_THIRDS - 1e-9 for p in points], i)
    if not est.steps_censored:
        est.within_1_5x = _run_around(points, [p.median <= WITHIN * est.steps for p in points], i)
    return est


# --- the bootstrap -------------------------------------------------------------------------------


def bandwidth(arms: Mapping[str, Sequence[Point]]) -> float:
    """The smoothing h: the pooled within-point SD of log steps over the points where every
    seed reached the target, over sqrt(n) (n: their seeds); 0 when no point has two seeds."""
    sum_sq, dof, sizes = 0.0, 0, []
    for points in arms.values():
        for p in points:
            x = np.log(np.asarray(p.steps, float))
            if len(x) >= 2 and np.all(np.isfinite(x)):
                sum_sq += float(((x - x.mean()) ** 2).sum())
                dof += len(x) - 1
                sizes.append(len(x))
    if dof == 0:
        return 0.0
    return math.sqrt(sum_sq / dof / float(np.mean(sizes)))


def resampled_medians(
    points: Sequence[Point],
    picks: np.ndarray,
    h: float,
    budget: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """(replicates, points) medians, and whether every resampled seed reached the target.

    ``picks`` (replicates, seeds): the resampled seed indices, the same at every point (the
    seeds are shared; a point with fewer seeds takes them modulo its count). Each value is
    multiplied by exp(h z); a value past the budget counts as never (inf)."""
    points = sorted(points, key=lambda p: p.lr)
    n, width = picks.shape
    values = np.stack([np.resize(np.asarray(p.steps, float), width) for p in points])
    counts = np.asarray([len(p.steps) for p in points])
    index = picks[:, None, :] % counts[None, :, None]  # (replicates, points, seeds)
    draws = values[np.arange(len(points))[None, :, None], index]
    if h > 0:
        draws = draws * np.exp(h * rng.standard_normal(draws.shape))
    draws = np.where(draws > budget, np.inf, draws)
    return np.median(draws, axis=2), np.isfinite(draws).all(axis=2)


def best_of(medians: np.ndarray, reliable: np.ndarray) -> np.ndarray:
    """T* per replicate, chosen by ``best_index``'s rule: the lowest median among the points
    where every (resampled) seed reached the target, else among all."""
    some = reliable.any(axis=1)
    return np.where(some, np.where(reliable, medians, np.inf).min(axis=1), medians.min(axis=1))


def _interval(values: np.ndarray, level: float = LEVEL) -> list[float | None] | None:
    """Percentile interval (no interpolation, so infinite replicates stay infinite); an end at
    infinity is None (unbounded); None when no replicate is defined."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None
    tail = (1 - level) / 2
    lo = float(np.quantile(values, tail, method="inverted_cdf"))
    hi = float(np.quantile(values, 1 - tail, method="inverted_cdf"))
    return [lo if math.isfinite(lo) else None, hi if math.isfinite(hi) else None]


def estimate_network(
    arms: Mapping[str, Sequence[Point]],
    budget: int,
    baseline: str | None = None,
    *,
    n_boot: int = BOOTSTRAP_SAMPLES,
    seed: int = BOOTSTRAP_SEED,
    margin: float = TIE_MARGIN,
    level: float = LEVEL,
) -> NetworkEstimate:
    """Every arm's estimate, the tie set and the baseline's ratios (module docstring)."""
    names = sorted(arms)
    estimates = {name: describe_arm(name, arms[name], budget) for name in names}
    seeds = max((len(p.steps) for ps in arms.values() for p in ps), default=0)
    h = bandwidth(arms)
    rng = np.random.default_rng(seed)
    interval = seeds >= 2
    picks = rng.integers(0, max(seeds, 1), (n_boot, seeds))
    resampled = (
        {name: resampled_medians(arms[name], picks, h, budget, rng) for name in names}
        if interval
        else {}
    )
    medians = {name: m for name, (m, _) in resampled.items()}
    star = {name: best_of(m, ok) for name, (m, ok) in resampled.items()}
    best_value = min(
        (e.steps for e in estimates.values() if not e.fails and not e.steps_censored),
        default=None,
    )
    if interval:
        table = np.stack([star[n] for n in names], axis=1)  # (replicates, arms)
        low = table.min(axis=1)
        defined = np.isfinite(low)
        winners = (table == low[:, None]) & defined[:, None]
        share = winners / np.maximum(winners.sum(axis=1, keepdims=True), 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratios = np.where(defined[:, None], table / low[:, None], np.nan)
    for j, name in enumerate(names):
        e = estimates[name]
        if e.fails:
            continue
        if interval:
            e.steps_ci = _interval(star[name], level)
            e.p_best = float(share[:, j].mean())
            e.ratio_ci = _interval(ratios[:, j], level)
        if best_value is not None:
            e.ratio_to_best = e.steps / best_value
            e.ratio_censored = e.steps_censored
    recommended = _tie_set(estimates, best_value, margin, interval)
    base = None
    if baseline is not None:
        lead = recommended[0] if recommended else None
        base = _baseline(baseline, estimates, arms, medians, star, lead, budget, level)
    return NetworkEstimate(estimates, recommended, base, budget, seeds, h if interval else 0.0)


def _tie_set(
    estimates: Mapping[str, ArmEstimate], best_value: float | None, margin: float, interval: bool
) -> list[str]:
    """Arms that tie with the best: their ratio interval reaches 1 (in some replicates they are
    the fastest: the data cannot tell them apart) or their ratio is at most 1 + margin (too
    close to matter); widest basin first, then the fastest."""
    if best_value is None:
        return []
    ties = []
    for name, e in estimates.items():
        if e.fails or e.steps_censored:
            continue
        reaches_one = interval and e.ratio_ci is not None and e.ratio_ci[0] <= 1 + 1e-9
        if reaches_one or e.ratio_to_best <= 1 + margin + 1e-12:
            ties.append(name)

    def order(name: str):
        e = estimates[name]
        width = -1.0 if e.basin_decades is None else e.basin_decades
        return (-round(width, 6), e.steps, name)

    return sorted(ties, key=order)


def _baseline(
    name: str,
    estimates: Mapping[str, ArmEstimate],
    arms: Mapping[str, Sequence[Point]],
    medians: Mapping[str, np.ndarray],
    star: Mapping[str, np.ndarray],
    lead: str | None,
    budget: int,
    level: float,
) -> dict:
    """The framework default as users run it, against the recommendation's first arm: at its
    own best learning rate and at the recommendation's LR*, each ratio with its interval."""
    out = {
        "arm": name,
        "measured": name in estimates,
        "fails": False,
        "steps": None,
        "steps_censored": False,
        "best_lr": None,
        "ratio_own_lr": None,
        "ratio_own_lr_ci": None,
        "ratio_own_lr_censored": False,
        "ratio_at_recommended_lr": None,
        "ratio_at_recommended_lr_ci": None,
        "ratio_at_recommended_lr_censored": False,
    }
    if name not in estimates:
        return out
    e = estimates[name]
    out.update(fails=e.fails, steps=e.steps, steps_censored=e.steps_censored, best_lr=e.best_lr)
    if e.fails or lead is None:
        return out
    rec = estimates[lead]
    out["ratio_own_lr"] = e.steps / rec.steps
    out["ratio_own_lr_censored"] = e.steps_censored
    with np.errstate(invalid="ignore", divide="ignore"):
        if name in star:
            out["ratio_own_lr_ci"] = _interval(star[name] / star[lead], level)
        points = sorted(arms[name], key=lambda p: p.lr)
        at = [j for j, p in enumerate(points) if math.isclose(p.lr, rec.best_lr, rel_tol=1e-6)]
        if at:
            there = points[at[0]].median
            censored = not math.isfinite(there)
            out["ratio_at_recommended_lr"] = (budget + 1 if censored else there) / rec.steps
            out["ratio_at_recommended_lr_censored"] = censored
            if medians.get(name) is not None:
                out["ratio_at_recommended_lr_ci"] = _interval(
                    medians[name][:, at[0]] / star[lead], level
                )
    return out


# --- where a grid is still open ------------------------------------------------------------------


def open_sides(points: Sequence[Point]) -> tuple[bool, bool]:
    """(low, high): whether the arm's basin may continue past its lowest / highest learning rate
    tried. A side is open when some seed reached the target at that end; for an arm that never
    reached it anywhere, the low side is open when the lowest point diverged (a smaller rate may
    tame it) and the high side when the highest point did not (a larger one may get it moving)."""
    if not points:
        return False, False
    points = sorted(points, key=lambda p: p.lr)
    lo, hi = points[0], points[-1]
    if any(np.isfinite(p.steps).any() for p in points):
        return bool(np.isfinite(lo.steps).any()), bool(np.isfinite(hi.steps).any())
    return lo.diverged_share >= 0.5, hi.diverged_share < 0.5
