"""Which initialization should this network use, and how sure is the study? One row per network.

A *network* (cell) is one (model.kind, model.activation, model.depth), plus each of
``NETWORK_KEYS`` (model.width, model.norm, model.heads, model.attention_scale) where the study's
trials differ in it. In each cell the completed trials are grouped into *arms*, the init choices
compared: the initializer family (``report.family``; the framework defaults keep their own
names), and beside it each of ``ARM_KEYS`` (init.residual, init.parametrization, init.readout)
that takes more than one value in the cell, so a residual study that fixes the initializer and
varies the rule compares the rules (``he·residual=fixup`` against ``he·residual=none``). Each
arm is scored by its median steps to target over every seed of every trial (a seed that never
reached the target counts as ``train.steps + 1``: a lower bound, so "never" ranks last). The
fastest arm is the recommendation, the next one the runner-up.

How sure: a percentile bootstrap (Efron & Tibshirani 1993, ch. 13) of the runner-up's median
minus the winner's, resampling trials within each group and then seeds within each trial
(a two-stage bootstrap, Davison & Hinkley 1997, section 3.8), ``BOOTSTRAP_SAMPLES`` resamples
from a fixed seed, level ``LEVEL``. ``significant``: the interval excludes 0. With fewer than
``MIN_TRIALS`` trials in the winner or the runner-up there is no recommendation
(``enough_evidence`` false); otherwise, when the interval still covers 0, the number of further
trials per group that would make it exclude the observed difference assumes the interval's
half-width shrinks as 1/sqrt(trials).

An initializer's verdict at one learning rate is a verdict on the pair (a ReLU network from
Glorot recovers its smaller scale under a larger learning rate, by homogeneity), so each row also
says where the learning rate was: trials are binned by learning rate (``LR_BINS_PER_DECADE`` bins
per decade of log10) and the row reports the best initializer at its own best bin and the best
one at a single bin shared by every initializer (``learning_rates``).
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Iterable
from typing import Any, NamedTuple

import numpy as np
import optuna
from rich.table import Table

from pipeline.search.study import ranked_trials, trial_metrics, trial_seed_steps, trial_spec
from pipeline.tracking.report import family

LEVEL = 0.95
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0
MIN_TRIALS = 3  # per group, for the winner and the runner-up
# Beyond this many times the trials a group has, a difference is too small next to the noise to
# be worth settling: the note says "equally fast" instead of asking for thousands of trials.
PRACTICAL_TRIALS = 10
CELL_KEYS = ("model.kind", "model.activation", "model.depth")
# Structural keys that name a network too, where the study's trials differ in them.
NETWORK_KEYS = ("model.width", "model.norm", "model.heads", "model.attention_scale")
# Init choices compared beside the initializer family, where they vary within a network.
ARM_KEYS = ("init.residual", "init.parametrization", "init.readout")
LR_BINS_PER_DECADE = 2  # learning-rate bins: [10^(k/2), 10^((k+1)/2)), about 3.2x wide


class Trial(NamedTuple):
    """What a recommendation reads of one completed trial."""

    init: str  # the group: initializer family, or a framework default's own name
    gain: float  # init.gain as a number (auto resolved)
    learning_rate: float
    seed_steps: tuple[float, ...]  # steps to target per seed, never = steps + 1
    steps: int  # train.steps: beyond it is "never"
    sigma_w2: float | None  # theory.trial_variances: what the gain means to mean-field theory
    sigma_b2: float | None
    activation: str
    negative_slope: float
    objective: float  # breaks ties between groups that all missed the target
    choices: tuple[tuple[str, Any], ...] = ()  # (key, value) of each of ARM_KEYS

    @property
    def median(self) -> float:
        return statistics.median(self.seed_steps)


def group_name(weights: str) -> str:
    """The group a trial counts in: its family, or a framework default's own name."""
    return family(weights)


def network_keys(specs: Iterable) -> tuple[str, ...]:
    """The keys that name a network: ``CELL_KEYS`` and each of ``NETWORK_KEYS`` the specs
    differ in (an MLP study's labels stay ``mlp·relu·d16``)."""
    specs = list(specs)
    varying = tuple(k for k in NETWORK_KEYS if len({repr(s[k]) for s in specs}) > 1)
    return (*CELL_KEYS, *varying)


def arm_keys(trials: Iterable[Trial]) -> list[str]:
    """The ``ARM_KEYS`` that take more than one value among ``trials`` (one network's)."""
    values: dict[str, set] = {}
    for t in trials:
        for k, v in t.choices:
            values.setdefault(k, set()).add(repr(v))
    return [k for k in ARM_KEYS if len(values.get(k, ())) > 1]


def arm_label(init: str, choices: dict[str, Any]) -> str:
    """``he``, or ``he·residual=fixup`` with the varying arm keys' values."""
    return "·".join([init, *(f"{k.split('.')[-1]}={v}" for k, v in choices.items())])


def trial_arm(t: Trial, keys: list[str]) -> dict[str, Any]:
    """What a trial's arm is: ``init.weights`` (its family) and its values of ``keys``."""
    choices = dict(t.choices)
    return {"init.weights": t.init, **{k: choices.get(k) for k in keys}}


def study_cells(study: optuna.Study) -> dict[tuple, list[Trial]]:
    """The study's completed trials per network: (structural key, value) pairs -> trials."""
    from pipeline.core.initializers import resolve_gain
    from pipeline.core.theory import trial_variances

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
                tuple((k, s[k]) for k in ARM_KEYS),
            )
        )
    return cells


def pooled_median(trials: Iterable[Trial]) -> float:
    """Median steps to target over every seed of every trial."""
    return float(np.median([v for t in trials for v in t.seed_steps]))


def _resampled_medians(trials: list[Trial], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` bootstrap medians: trials resampled with replacement, then seeds within each."""
    seeds = max(len(t.seed_steps) for t in trials)
    values = np.full((len(trials), seeds), np.nan)
    for i, t in enumerate(trials):
        values[i, : len(t.seed_steps)] = t.seed_steps
    counts = np.asarray([len(t.seed_steps) for t in trials])
    picked = rng.integers(0, len(trials), (n, len(trials)))
    within = (rng.random((n, len(trials), seeds)) * counts[picked][..., None]).astype(int)
    draws = values[picked[..., None], within]
    draws[np.arange(seeds) >= counts[picked][..., None]] = np.nan  # a trial's own seed count
    return np.nanmedian(draws.reshape(n, -1), axis=1)


def bootstrap_difference(
    winner: list[Trial], runner_up: list[Trial], level: float = LEVEL
) -> tuple[float, float]:
    """Percentile interval of median(runner-up) - median(winner), seeded: reproducible."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    diff = _resampled_medians(runner_up, BOOTSTRAP_SAMPLES, rng) - _resampled_medians(
        winner, BOOTSTRAP_SAMPLES, rng
    )
    tail = (1 - level) / 2
    low, high = np.quantile(diff, [tail, 1 - tail])
    return float(low), float(high)


def more_trials(n: int, half_width: float, difference: float) -> int | None:
    """Further trials per group after which an interval of half-width ``half_width`` (shrinking
    as 1/sqrt(trials)) would exclude 0 if the difference stays; None: no difference to find."""
    if difference <= 0:
        return None
    return max(1, math.ceil(n * (half_width / difference) ** 2) - n)


def _span(values: Iterable[float]) -> list[float]:
    values = sorted(values)
    return [values[0], values[-1]]


@functools.cache
def _critical_sigma_w2(activation: str, sigma_b2: float, slope: float) -> float | None:
    from pipeline.core.theory import critical_sigma_w2

    try:
        return critical_sigma_w2(activation, sigma_b2, slope)
    except ValueError:  # no chi1 = 1 in the bracket (e.g. identity with a bias)
        return None


def critical_gain(trial: Trial) -> float | None:
    """The gain at which mean-field theory puts this trial's initializer at the edge of chaos
    (chi1 = 1; Poole et al. 2016, Schoenholz et al. 2017) for its own sigma_b^2: sigma_w^2 is
    proportional to gain^2, so gain * sqrt(sigma_w2* / sigma_w2). Root-finding costs about a
    second: once per (activation, sigma_b^2 at 4 significant digits, slope)."""
    if not trial.sigma_w2:
        return None
    critical = _critical_sigma_w2(
        trial.activation, float(f"{trial.sigma_b2:.4g}"), trial.negative_slope
    )
    return None if critical is None else trial.gain * math.sqrt(critical / trial.sigma_w2)


def _theory(trials: list[Trial]) -> dict[str, float | None]:
    """Theory's critical gain and sigma_w^2 for the winner's best trial (``critical_gain``)."""
    best = min(trials, key=lambda t: t.median)
    gain = critical_gain(best)
    if gain is None:
        return {"theory_gain": None, "theory_sigma_w2": None}
    return {"theory_gain": gain, "theory_sigma_w2": best.sigma_w2 * (gain / best.gain) ** 2}


def lr_bin(learning_rate: float) -> int:
    """The learning-rate bin: ``k`` for rates in [10^(k/b), 10^((k+1)/b)), b bins per decade."""
    return math.floor(LR_BINS_PER_DECADE * math.log10(learning_rate) + 1e-9)


def _bin_span(k: int) -> list[float]:
    return [10 ** (k / LR_BINS_PER_DECADE), 10 ** ((k + 1) / LR_BINS_PER_DECADE)]


def learning_rates(groups: dict[str, list[Trial]]) -> dict[str, Any]:
    """Where the learning rate was, per network: ``own``, the initializer whose median is lowest
    at its own best learning-rate bin; ``shared``, the bin in which every initializer was measured
    and the pooled median over all of them is lowest, with the winner there and each
    initializer's median in it. ``shared`` is None when no bin holds every initializer; with one
    learning rate throughout both name the same bin."""
    per_group: dict[str, dict[int, list[Trial]]] = {}
    for name, trials in groups.items():
        for t in trials:
            per_group.setdefault(name, {}).setdefault(lr_bin(t.learning_rate), []).append(t)

    def best_bin(bins: dict[int, list[Trial]]) -> int:  # ties: the bin with more trials
        return min(bins, key=lambda k: (pooled_median(bins[k]), -len(bins[k])))

    own = {name: best_bin(bins) for name, bins in per_group.items()}
    lead = min(own, key=lambda g: pooled_median(per_group[g][own[g]]))
    at_own = per_group[lead][own[lead]]
    shared_bins = set.intersection(*(set(bins) for bins in per_group.values()))
    shared = None
    if shared_bins:
        k = min(
            shared_bins, key=lambda k: pooled_median(t for b in per_group.values() for t in b[k])
        )
        medians = {g: pooled_median(bins[k]) for g, bins in per_group.items()}
        winner = min(medians, key=medians.get)
        shared = {
            "learning_rate": _bin_span(k),
            "init": winner,
            "steps_to_target": medians[winner],
            "by_init": medians,
            "trials": sum(len(b[k]) for b in per_group.values()),
        }
    return {
        "bins_per_decade": LR_BINS_PER_DECADE,
        "own": {
            "init": lead,
            "learning_rate": _bin_span(own[lead]),
            "steps_to_target": pooled_median(at_own),
            "trials": len(at_own),
        },
        "shared": shared,
    }


def _baseline(
    groups: dict[str, list[Trial]], name: str, winner_median: float, keys: Iterable[str] = ()
) -> dict:
    """The framework default's median on this network and the winner's speed-up over it: the
    arm of ``name`` at the schema's defaults of the varying arm ``keys`` (no residual rule, sp,
    the default read-out), the framework as it comes."""
    from pipeline.config import DEFAULTS

    label = arm_label(name, {k: DEFAULTS[k] for k in keys})
    trials = groups.get(label)
    if not trials:
        measured = any(t.init == name for ts in groups.values() for t in ts)
        return {
            "name": name,
            "steps_to_target": None,
            "speedup": None,
            "note": f"not measured: no trial of {label}"
            if measured
            else f"not measured: add {name} to space.init.weights",
        }
    median = pooled_median(trials)
    return {"name": name, "steps_to_target": median, "speedup": median / winner_median}


def recommend_cell(cell: tuple, trials: list[Trial], baseline: str) -> dict[str, Any]:
    """One network's row: winner, runner-up, the bootstrap interval, the baseline, theory.
    The groups are the cell's arms (``arm_keys``); their labels fill the ``init`` fields."""
    keys = arm_keys(trials)
    groups: dict[str, list[Trial]] = {}
    arms: dict[str, dict[str, Any]] = {}
    for t in trials:
        arm = trial_arm(t, keys)
        name = arm_label(t.init, {k: arm[k] for k in keys})
        groups.setdefault(name, []).append(t)
        arms[name] = arm
    # Ties (all "never") go to the group that got closer to the target, as in family_verdicts.
    ranked = sorted(
        groups,
        key=lambda g: (pooled_median(groups[g]), statistics.median(t.objective for t in groups[g])),
    )
    lead, runner = ranked[0], (ranked[1] if len(ranked) > 1 else None)
    winners = groups[lead]
    median = pooled_median(winners)
    hits = [t for t in winners if t.median <= t.steps]
    shown = hits or sorted(winners, key=lambda t: t.median)[:MIN_TRIALS]
    row: dict[str, Any] = {
        "network": dict(cell),
        "arm_keys": ["init.weights", *keys],
        "leader": lead,
        "leader_arm": arms[lead],
        "recommended": None,
        "trials": len(winners),
        "seeds": sum(len(t.seed_steps) for t in winners),
        "steps_to_target": median,
        "reach_rate": len(hits) / len(winners),
        "gain": _span(t.gain for t in shown),
        "learning_rate": _span(t.learning_rate for t in shown),
        "runner_up": None,
        "ci": None,
        "significant": False,
        "baseline": _baseline(groups, baseline, median, keys),
        "learning_rates": learning_rates(groups),
        **_theory(winners),
    }
    if runner is None:
        return {
            **row,
            "enough_evidence": False,
            "note": "only one initializer measured here (and one value of each of "
            f"{', '.join(ARM_KEYS)}): nothing to compare",
        }
    if median > winners[0].steps:  # the fastest group's median seed never got there
        return {
            **row,
            "enough_evidence": False,
            "note": "no initializer reached the target in half its runs: nothing to recommend at "
            "these settings (more train.steps, another learning-rate range, or a higher "
            "train.target_loss)",
        }
    rivals = groups[runner]
    row["runner_up"] = {
        "init": runner,
        "steps_to_target": pooled_median(rivals),
        "trials": len(rivals),
        "arm": arms[runner],
    }
    short = [g for g in (lead, runner) if len(groups[g]) < MIN_TRIALS]
    if short:
        need = ", ".join(f"{MIN_TRIALS - len(groups[g])} more of {g}" for g in short)
        return {
            **row,
            "enough_evidence": False,
            "note": f"too few trials (at least {MIN_TRIALS} each): run {need}",
        }
    low, high = bootstrap_difference(winners, rivals)
    significant = low > 0
    row.update(
        recommended={"init": lead, "gain": row["gain"]},
        ci={"low": low, "high": high, "level": LEVEL},
        significant=significant,
        enough_evidence=True,
    )
    if significant:
        return {**row, "note": f"{lead} is faster than {runner} beyond noise"}
    difference = pooled_median(rivals) - median
    n = min(len(winners), len(rivals))
    more = more_trials(n, (high - low) / 2, difference)
    if more and more <= PRACTICAL_TRIALS * n:
        note = (
            f"{lead} and {runner} are within noise; about {more} more trial(s) of each would "
            "settle it"
        )
    else:  # no difference, or one far below the spread: more trials would not make it matter
        note = (
            f"{lead} and {runner} are equally fast here (medians {difference:.3g} steps apart, "
            f"well inside the noise)"
        )
    return {**row, "note": note}


def recommendations(study: optuna.Study, baseline: str = "torch_default") -> list[dict]:
    """One row per network the study covers (see the module docstring)."""
    cells = study_cells(study)
    return [
        recommend_cell(cell, cells[cell], baseline)
        for cell in sorted(cells, key=lambda c: [v for _, v in c])
    ]


def _steps(value: float | None, steps: int | None = None) -> str:
    if value is None:
        return "-"
    return "never" if steps is not None and value > steps else f"{value:.0f}"


def _range(span: list[float]) -> str:
    lo, hi = span
    return f"{lo:.3g}" if math.isclose(lo, hi) else f"{lo:.3g}-{hi:.3g}"


def row_cells(row: dict) -> list[str]:
    """One recommendation as the strings of ``COLUMNS`` (terminal and HTML alike)."""
    rec, ci, base, runner = row["recommended"], row["ci"], row["baseline"], row["runner_up"]
    against = "-"
    if runner:
        against = f"{runner['init']} {_steps(runner['steps_to_target'])}"
        if ci:
            verdict = "beyond noise" if row["significant"] else "within noise"
            against += f", [{ci['low']:.0f}, {ci['high']:.0f}] {verdict}"
    return [
        network_label(row["network"]),
        f"{rec['init']} g {_range(rec['gain'])}" if rec else f"({row['leader']}?)",
        _steps(row["steps_to_target"]) + f" ({row['reach_rate']:.0%})",
        against,
        _range(row["learning_rate"]),
        _at_learning_rates(row["learning_rates"]),
        "-" if row["theory_gain"] is None else f"{row['theory_gain']:.3g}",
        f"{_steps(base['steps_to_target'])} ({base['speedup']:.2g}x)"
        if base["speedup"]
        else "not measured",
    ]


def _at_learning_rates(view: dict) -> str:
    """``he @0.1-0.32 41 | shared 0.1-0.32: he 41``: the best initializer at its own best
    learning-rate bin, and the best at the one bin shared by all (``learning_rates``)."""
    own, shared = view["own"], view["shared"]
    text = f"{own['init']} @{_range(own['learning_rate'])}: {_steps(own['steps_to_target'])}"
    if shared is None:
        return text + "; no bin shared by all"
    if shared["learning_rate"] == own["learning_rate"] and shared["init"] == own["init"]:
        return text + " (the shared bin too)"
    return (
        text + f"; shared @{_range(shared['learning_rate'])}: {shared['init']} "
        f"{_steps(shared['steps_to_target'])}"
    )


COLUMNS = (
    "network",
    "use (gain)",
    "median steps (reached)",
    f"runner-up, {LEVEL:.0%} CI of the difference",
    "learning rate",
    "best at own / shared LR",
    "theory gain",
    "baseline (speed-up)",
)


def network_label(network: dict) -> str:
    """``mlp·relu·d16`` (``·w64`` when widths differ, ``·norm=pre`` when norms do), like a run's
    name."""
    prefix = {"model.depth": "d", "model.width": "w"}
    return "·".join(
        f"{prefix[k]}{v}"
        if k in prefix
        else (f"{k.split('.')[-1]}={v}" if k in NETWORK_KEYS else f"{v}")
        for k, v in network.items()
    )


def recommendation_table(rows: list[dict], baseline: str) -> Table:
    """The rows as a rich table: what `recommend` and the end of a sweep print."""
    notes = "\n".join(f"{network_label(r['network'])}: {r['note']}" for r in rows)
    table = Table(
        title=f"which initialization, per network (baseline {baseline})",
        caption=notes,
        caption_justify="left",
    )
    for name in COLUMNS:
        table.add_column(name, justify="left", overflow="fold")
    for row in rows:
        table.add_row(*row_cells(row))
    return table
