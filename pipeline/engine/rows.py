"""The traced arrays: one trial's spec turned into the per-row numbers of ``Hparams``."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import numpy as np

from pipeline.config import ROW_KEYS, TrialSpec
from pipeline.core.initializers import (
    INITIALIZERS,
    bias_moments,
    compute_fans,
    resolve_gain,
    weight_scale,
)
from pipeline.core.model import GATED, Residual, Structure, rules_in_force
from pipeline.core.net import Layout
from pipeline.core.rules import BIAS_KEYS, WEIGHT_KEYS, evaluate, resolve
from pipeline.core.theory import residual_scales
from pipeline.core.train import Hparams


def structure_values(trial: TrialSpec, structure: Structure) -> dict[str, float]:
    """What a rule's ``scale`` formula may read (``pipeline.core.rules.NAMES``)."""
    return {
        "depth": trial["model.depth"],
        "width": trial["model.width"],
        "n_features": structure.n_in,
        "n_classes": structure.n_classes,
    }


def trial_rules(trial: TrialSpec) -> list[dict]:
    """A trial's ``init.rules`` and those its ``init.residual`` and ``init.readout`` generate."""
    return rules_in_force(
        trial["init.rules"], trial["init.residual"], trial["init.readout"], trial["model.depth"]
    )


def leaf_inits(trial: TrialSpec, layout: Layout, structure: Structure) -> dict[str, dict]:
    """Per parameter path, the init keys in force (the trial's ``init.*`` overridden by its
    rules, ``trial_rules``) and the resolved ``scale`` multiplier."""
    base = {k: trial[f"init.{k}"] for k in (*WEIGHT_KEYS, *BIAS_KEYS)}
    values = structure_values(trial, structure)
    rules = trial_rules(trial)
    out = {}
    for leaf in layout.leaves:
        r = resolve(base, rules, leaf.path)
        r["scale"] = evaluate(r["scale"], values)
        out[leaf.path] = r
    return out


@functools.cache
def bias_fan_ins(layout: Layout) -> dict[str, float | None]:
    """Per bias path, the fan_in of its module's kernel (``torch_default`` bias needs it);
    None for a bias without a sibling kernel. Once per layout, not once per trial."""
    kernels = {leaf.path.rsplit("/", 1)[0]: leaf for leaf in layout.kernels}
    out = {}
    for leaf in layout.biases:
        kernel = kernels.get(leaf.path.rsplit("/", 1)[0])
        out[leaf.path] = compute_fans(kernel.fan_shape).fan_in if kernel else None
    return out


def kernel_scale(r: dict, fan_shape: tuple[int, ...], activation: str, slope: float) -> float:
    """The std, limit, value or multiplier of a kernel whose init keys in force are ``r``."""
    gain = resolve_gain(r["weights"], r["gain"], activation, slope)
    return weight_scale(r["weights"], compute_fans(fan_shape), gain, r) * r["scale"]


def residual_row(trial: TrialSpec) -> Residual | None:
    """A residual MLP's forward constants (``theory.residual_scales``); None for other kinds."""
    if trial["model.kind"] != "resmlp":
        return None
    s = residual_scales(trial["init.residual"], trial["model.depth"])
    gated = trial["init.residual"] in GATED
    return Residual(np.float32(s.alpha), np.float32(s.skip), np.bool_(gated))


def row_hparams(
    trial: TrialSpec, layout: Layout, structure: Structure, draws: tuple[str, ...], seed: int
) -> Hparams:
    """The traced numbers of one row, computed on the host from a trial's spec: the schema's
    ``row`` keys as they are, and per parameter leaf its draw, scale and bias moments."""
    activation, slope = trial["model.activation"], trial["model.negative_slope"]
    inits = leaf_inits(trial, layout, structure)
    draw, scale = [], []
    for leaf in layout.kernels:
        r = inits[leaf.path]
        scale.append(kernel_scale(r, leaf.fan_shape, activation, slope))
        draw.append(draws.index(INITIALIZERS[r["weights"]].draw))
    moments = []
    fan_ins = bias_fan_ins(layout)
    for leaf in layout.biases:
        r = inits[leaf.path]
        mean, std = bias_moments(
            r["bias"], r["bias_value"], r["bias_std"], fan_ins[leaf.path], r["weights"]
        )
        moments.append((mean * r["scale"], std * abs(r["scale"])))
    weights = trial["init.weights"]
    clip = trial["train.clip_norm"]
    return Hparams(
        draw=np.asarray(draw, np.int32),
        scale=np.asarray(scale, np.float32),
        bias_mean=np.asarray([m for m, _ in moments], np.float32),
        bias_std=np.asarray([s for _, s in moments], np.float32),
        other_scale=np.asarray([inits[leaf.path]["scale"] for leaf in layout.others], np.float32),
        gain=np.float32(resolve_gain(weights, trial["init.gain"], activation, slope)),
        clip_norm=np.float32(np.inf if clip is None else clip),
        lsuv=np.bool_(INITIALIZERS[weights].data_dependent),
        depth=np.int32(trial["model.depth"]),
        seed=np.int32(seed),
        values={k: np.float32(trial[k]) for k in ROW_KEYS},
        residual=residual_row(trial),
    )


def stack_rows(rows: Sequence[Hparams], sharding=None) -> Hparams:
    """One ``Hparams`` of arrays with a leading row axis (placed with ``sharding``)."""
    return jax.tree.map(lambda *xs: jax.device_put(np.stack(xs), sharding), *rows)
