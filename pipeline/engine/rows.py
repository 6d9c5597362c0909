"""The traced arrays: one trial's spec turned into the per-row numbers of ``Hparams``."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import numpy as np

from pipeline.config import ROW_KEYS, TrialSpec
from pipeline.core.activations import names_of
from pipeline.core.initializers import (
    INITIALIZERS,
    bias_draw,
    bias_moments,
    compute_fans,
    resolve_gain,
    weight_scale,
)
from pipeline.core.model import GATED, RESIDUAL_KINDS, Residual, Structure, rules_in_force
from pipeline.core.net import Layout
from pipeline.core.parametrization import (
    LeafScaling,
    Multipliers,
    branch_multiplier,
    multipliers,
    roles_by_fans,
    roles_by_shapes,
)
from pipeline.core.residual import residual_scales
from pipeline.core.rules import BIAS_KEYS, WEIGHT_KEYS, evaluate, resolve
from pipeline.core.train import Hparams
from pipeline.core.transformer import attention_scale


def structure_values(trial: TrialSpec, structure: Structure) -> dict[str, float]:
    """What a rule's ``scale`` formula may read (``pipeline.core.rules.NAMES``)."""
    return {
        "depth": trial["model.depth"],
        "width": trial["model.width"],
        "n_features": structure.n_in,
        "n_classes": structure.n_classes,
    }


def trial_rules(trial: TrialSpec) -> list[dict]:
    """A trial's ``init.rules`` and those its ``init.residual``, ``init.readout`` and (for a
    transformer) ``init.embedding_std`` generate."""
    return rules_in_force(
        trial["init.rules"],
        trial["init.residual"],
        trial["init.readout"],
        trial["model.depth"],
        trial["model.kind"],
        trial["init.embedding_std"],
    )


def rule_inits(base: dict, rules: Sequence[dict], path: str, values: dict) -> dict:
    """The init keys in force for the parameter at ``path`` (``base`` overridden by the rules
    that match it) with the rules' ``scale`` formula evaluated on ``values``: one parameter's
    resolution, which ``leaf_inits`` applies to every leaf of a network and the exports to a
    layer's kernel and bias (``pipeline.reuse.resolve.init_spec``)."""
    r = resolve(base, rules, path)
    r["scale"] = evaluate(r["scale"], values)
    return r


def leaf_inits(
    trial: TrialSpec, layout: Layout, structure: Structure, scaled: tuple | None = None
) -> dict[str, dict]:
    """Per parameter path, the init keys in force (the trial's ``init.*`` overridden by its
    rules, ``trial_rules``) and the resolved ``scale`` multiplier; ``scaled``: the trial's
    ``leaf_multipliers`` when the caller has them already."""
    base = {k: trial[f"init.{k}"] for k in (*WEIGHT_KEYS, *BIAS_KEYS)}
    values = structure_values(trial, structure)
    rules = trial_rules(trial)
    scaled = scaled if scaled is not None else leaf_multipliers(trial, layout, structure)
    out = {}
    for leaf, m in zip(layout.leaves, scaled):
        r = rule_inits(base, rules, leaf.path, values)
        r["scale"] *= m.init  # init.parametrization's std multiplier on top (μP's read-out)
        out[leaf.path] = r
    return out


def base_size(trial: TrialSpec) -> tuple[int, int]:
    """(model.base_width, model.base_depth), null meaning the trial's own width and depth."""
    width, depth = trial["model.width"], trial["model.depth"]
    return trial["model.base_width"] or width, trial["model.base_depth"] or depth


def leaf_multipliers(trial: TrialSpec, layout: Layout, structure: Structure) -> tuple:
    """Per leaf (layout order), init.parametrization's ``Multipliers`` of the initial std and
    the learning rate and the weight decay (``pipeline.core.parametrization``); all 1 for
    ``sp``."""
    name = trial["init.parametrization"]
    if name == "sp":
        return (Multipliers(1.0, 1.0),) * len(layout.leaves)
    base_width, base_depth = base_size(trial)
    scalings = leaf_scalings(layout, structure, trial["model.width"], base_width)
    adam = trial["train.optimizer"] == "adam"
    depth_ratio = trial["model.depth"] / base_depth
    return tuple(multipliers(name, s, adam, depth_ratio) for s in scalings)


@functools.cache
def leaf_scalings(
    layout: Layout, structure: Structure, width: int, base_width: int
) -> tuple[LeafScaling, ...]:
    """Each leaf's role and its ratios to the base model, from the module built at the base
    width and at twice the width (the mup library's base and delta shapes); a user's module
    whose factory does not take ``width`` is read by its fans (``roles_by_fans``)."""
    from pipeline.config import ConfigError
    from pipeline.engine.factory import net_for

    if structure.width == 0:  # a factory without ``width``: the engine blanked it
        return roles_by_fans(layout.leaves, structure.n_in, structure.n_classes, width / base_width)
    try:
        base = net_for(structure._replace(width=base_width)).layout
    except ConfigError as e:
        raise ConfigError(f"model.base_width={base_width}: the base model: {e}") from None
    except Exception as e:  # e.g. a width the transformer's heads do not divide
        raise ConfigError(
            f"model.base_width={base_width}: the model cannot be built at that width "
            f"({type(e).__name__}: {e})"
        ) from None
    delta = net_for(structure._replace(width=2 * structure.width)).layout
    return roles_by_shapes(layout.leaves, base.leaves, delta.leaves, structure.norm)


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
    """A residual network's forward constants (``residual.residual_scales``); None for other
    kinds."""
    if trial["model.kind"] not in RESIDUAL_KINDS:
        return None
    s = residual_scales(trial["init.residual"], trial["model.depth"])
    gated = trial["init.residual"] in GATED
    # depth_mup: each branch x 1/sqrt(depth / base_depth), on top of init.residual's multiplier;
    # a gated branch (SkipInit, ReZero) is gate x that multiplier (the models read alpha so).
    depth_ratio = trial["model.depth"] / base_size(trial)[1]
    multiplier = branch_multiplier(trial["init.parametrization"], depth_ratio)
    alpha = multiplier if gated else s.alpha * multiplier
    return Residual(np.float32(alpha), np.float32(s.skip), np.bool_(gated))


def attention_row(trial: TrialSpec) -> np.float32 | None:
    """A transformer's attention logit scale as a traced number (``transformer.attention_scale``:
    the one function that turns model.attention_scale into it); None for other kinds."""
    if trial["model.kind"] != "transformer":
        return None
    return np.float32(attention_scale(trial))


def row_hparams(
    trial: TrialSpec, layout: Layout, structure: Structure, draws: tuple[str, ...], seed: int
) -> Hparams:
    """The traced numbers of one row, computed on the host from a trial's spec: the schema's
    ``row`` keys as they are, and per parameter leaf its draw, scale, bias moments and unit
    draw (uniform for PyTorch's default bias) and learning-rate and weight-decay multipliers."""
    activation, slope = trial["model.activation"], trial["model.negative_slope"]
    scaled = leaf_multipliers(trial, layout, structure)  # once: the init, rate and decay columns
    inits = leaf_inits(trial, layout, structure, scaled)
    draw, scale = [], []
    for leaf in layout.kernels:
        r = inits[leaf.path]
        scale.append(kernel_scale(r, leaf.fan_shape, activation, slope))
        draw.append(draws.index(INITIALIZERS[r["weights"]].draw))
    moments, uniform = [], []
    fan_ins = bias_fan_ins(layout)
    for leaf in layout.biases:
        r = inits[leaf.path]
        mean, std = bias_moments(
            r["bias"], r["bias_value"], r["bias_std"], fan_ins[leaf.path], r["weights"]
        )
        moments.append((mean * r["scale"], std * abs(r["scale"])))
        uniform.append(bias_draw(r["bias"], r["weights"]) == "uniform")
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
        attention_scale=attention_row(trial),
        lr_scale=np.asarray([m.lr for m in scaled], np.float32),
        decay_scale=np.asarray([m.decay for m in scaled], np.float32),
        bias_uniform=np.asarray(uniform, np.bool_),
        activation=activation_index(activation, structure),
    )


def activation_index(activation: str, structure: Structure) -> np.int32 | None:
    """The row's activation among a merged structure's (``activations.names_of``); None when
    the structure has only its own."""
    names = names_of(structure.activation)
    return np.int32(names.index(activation)) if len(names) > 1 else None


def stack_rows(rows: Sequence[Hparams], sharding=None) -> Hparams:
    """One ``Hparams`` of arrays with a leading row axis (placed with ``sharding``)."""
    return jax.tree.map(lambda *xs: jax.device_put(np.stack(xs), sharding), *rows)
