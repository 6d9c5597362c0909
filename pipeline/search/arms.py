"""How a study's trials are read as an experiment: networks, arms and points.

Of the keys the study's trials differ in, the space says what each one is:

- a *tuned* key is searched over a range (``train.learning_rate`` always; ``init.gain`` where a
  study of ``design=search`` draws it from a range): each arm is judged at its best value;
- an *arm* key is any other ``init.*`` key that varies (a list): what is compared;
- every other varying key, and always ``model.kind``, ``model.activation`` and ``model.depth``,
  names the *network* the comparison is made on.

An arm is an initializer as it is defined: its name alone means gain 1 (the formula as written)
and, for a framework default, that framework's own bias, so ``torch_default`` is PyTorch's
nn.Linear as it ships; anything else is named so (``torch_default×1.5``, ``he_normal×auto``,
``torch_default·bias=zeros``, ``he_normal·residual=fixup``) and is never the baseline. A *point*
is one value of the tuned keys (one learning rate) with the seeds measured there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

from pipeline.config import TrialSpec
from pipeline.core.estimate import Point
from pipeline.core.initializers import FRAMEWORK_BIAS, FRAMEWORK_DEFAULTS, resolve_bias
from pipeline.search.study import (
    QUESTION_ATTR,
    ranked_trials,
    trial_seed_diverged,
    trial_seed_steps,
    trial_spec,
)

CELL_KEYS = ("model.kind", "model.activation", "model.depth")
LR = "train.learning_rate"
# Beyond this many distinct values a varying number in a study stored without its space is read
# as drawn from a range (tuned), not as a list of levels.
LEVELS_AT_MOST = 6


@dataclass
class Network:
    """One network of a study: its key values and, per arm, the points measured."""

    label: str  # mlp·relu·d16
    values: dict[str, Any]  # network key -> value
    budget: int  # train.steps: beyond it is "never"
    arms: dict[str, list[Point]] = field(default_factory=dict)
    specs: dict[str, TrialSpec] = field(default_factory=dict)  # a spec per arm (any point's)
    params: dict[str, dict] = field(default_factory=dict)  # an Optuna params dict per arm
    tuned: tuple[str, ...] = (LR,)


def network_label(network: Mapping[str, Any]) -> str:
    """``mlp·relu·d16`` (``·w64`` when widths differ, ``·norm=pre`` when norms do)."""
    prefix = {"model.depth": "d", "model.width": "w"}
    return "·".join(
        f"{prefix[k]}{v}"
        if k in prefix
        else (f"{v}" if k in CELL_KEYS else f"{k.split('.')[-1]}={v}")
        for k, v in network.items()
    )


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def key_roles(
    specs: Iterable[TrialSpec], space: Mapping[str, Any] | None
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(network keys, arm keys, tuned keys) of a study, from its trials and its stored space
    (None for a study written before the space was stored: a number with more than
    ``LEVELS_AT_MOST`` distinct values is read as tuned)."""
    specs = list(specs)
    values: dict[str, set] = {}
    for s in specs:
        for k, v in s.flat().items():
            values.setdefault(k, set()).add(repr(v))
    varying = [k for k, vs in values.items() if len(vs) > 1]

    def tuned(k: str) -> bool:
        if k == LR:
            return True
        if space is not None:
            return isinstance(space.get(k), dict)
        return all(_number(s[k]) for s in specs) and len(values[k]) > LEVELS_AT_MOST

    tuned_keys = tuple(k for k in varying if tuned(k))
    arm_keys = tuple(k for k in varying if k.startswith("init.") and k not in tuned_keys)
    network_keys = (
        *CELL_KEYS,
        *(k for k in varying if k not in CELL_KEYS and k not in tuned_keys and k not in arm_keys),
    )
    return network_keys, arm_keys, tuned_keys


def _gain_text(gain: Any) -> str:
    return "auto" if gain == "auto" else f"{float(gain):g}"


def arm_label(spec: TrialSpec, arm_keys: Iterable[str], tuned_keys: Iterable[str] = ()) -> str:
    """The arm a trial belongs to, named as it is defined (module docstring)."""
    weights, gain = spec.init.weights, spec.init.gain
    label = weights
    default = weights in FRAMEWORK_DEFAULTS
    # gain 1 is the formula as written; a framework default's auto is its own gain, 1 too
    at_one = gain == "auto" and default or gain != "auto" and float(gain) == 1.0
    if "init.gain" not in tuned_keys and not at_one:
        label += f"×{_gain_text(gain)}"
    bias = resolve_bias(spec.init.bias, weights)
    if bias != FRAMEWORK_BIAS.get(weights, "zeros"):  # not its own bias (zeros but PyTorch's)
        label += f"·bias={bias}"
    for k in arm_keys:
        if k not in ("init.weights", "init.gain", "init.bias"):
            label += f"·{k.split('.')[-1]}={spec[k]}"
    return label


def is_as_shipped(label: str) -> bool:
    """Whether an arm is a framework default exactly as it ships (the baseline's arm)."""
    return label in FRAMEWORK_DEFAULTS


def study_networks(study: optuna.Study) -> list[Network]:
    """The study's completed trials as networks, arms and points (sorted by network label)."""
    trials = ranked_trials(study)
    specs = [trial_spec(study, t) for t in trials]
    space = study.user_attrs.get(QUESTION_ATTR, {}).get("space")
    network_keys, arm_keys, tuned = key_roles(specs, space)
    others = tuple(k for k in tuned if k != LR)
    grouped: dict[tuple, dict] = {}
    for t, s in zip(trials, specs):
        values = {k: s[k] for k in network_keys}
        label = network_label(values)
        net = grouped.setdefault(
            (label,), {"net": Network(label, values, s.train.steps, tuned=(LR, *others))}
        )
        network: Network = net["net"]
        network.budget = max(network.budget, s.train.steps)
        arm = arm_label(s, arm_keys, tuned)
        network.specs.setdefault(arm, s)
        network.params.setdefault(arm, dict(t.params))
        points = net.setdefault(arm, {})
        key = (float(s[LR]), *(s[k] for k in others))
        steps = [v if v <= s.train.steps else math.inf for v in trial_seed_steps(t)]
        diverged = trial_seed_diverged(t, len(steps))
        if key in points:  # the same point measured again (a rerun): its seeds together
            old = points[key]
            steps, diverged = [*old.steps, *steps], [*old.diverged, *diverged]
            numbers = (*old.trials, t.number)
        else:
            numbers = (t.number,)
        points[key] = Point(
            key[0],
            tuple(steps),
            tuple(bool(d) for d in diverged),
            numbers,
            tuple(zip(others, key[1:])),
        )
    out = []
    for (_,), net in sorted(grouped.items()):
        network = net.pop("net")
        for arm, points in sorted(net.items()):
            network.arms[arm] = sorted(points.values(), key=lambda p: (p.lr, p.extra))
        out.append(network)
    return out
