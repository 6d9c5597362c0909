"""The coordinate check (``python -m pipeline coord-check``): does any coordinate blow up with
width in the first steps of training?

Yang et al. 2022 ("Tensor Programs V", arXiv 2203.03466, section 7.2 and figure 5; the mup
library's ``get_coord_data``): train the same network at several widths for a few steps and plot,
per step, the mean absolute value of each layer's coordinates against the width on log-log axes.
In μP every curve is flat (coordinates are Θ(1) in width, at every step); in SP the layers after
the input grow with width once the first updates arrive (Adam: the update of a hidden weight
matrix moves each pre-activation by Θ(width) times the learning rate).

What is recorded: for each width, seed and step t = 0 (initialization), 1, ..., ``steps`` (after
t updates), on one fixed batch of the trial's training data (also the batch it trains on, as the
mup library's check does), the mean |.| over the batch of each layer's *pre-activation* (the
output of its dense or convolution layer, what the mup library's module hooks read), of a
residual network's stream after each block, and of the logits. Seeds are averaged before the
log-log fit; the slope per layer and step is the number the test and ``--json`` report.

A user's module (``model.kind=custom``) is checked the same way, unchanged: its factory builds it
at each width (so the factory must take ``width``; μP's roles then come from its shapes,
``parametrization.roles_by_shapes``), and Flax records the output of every dense and convolution
layer (``Net.capture``: linen's ``capture_intermediates``, NNX's ``nnx.capture``), named by its
module path, in the order the module first uses the layers. The read-out, whose output the
module returns as its logits, is reported once, as ``logits``.

Training is the engine's own: ``init_row`` and ``train_step`` of ``pipeline.core.train``, with the
trial's optimizer, learning rate, warmup and per-layer multipliers (init.parametrization), every
trial of a width in one ``jit(vmap(...))`` call. The initial weights are the trial's initializer
times its scales on unit draws; each width's draws are the leading block of the largest width's
(``_largest_draws``). The multipliers are relative to
``model.base_width`` (null: the configured ``model.width``), which fixes only the constants: the
slopes do not depend on it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pipeline.config import ConfigError, Space, TrialSpec
from pipeline.core.model import BUILTIN_KINDS
from pipeline.core.net import Net, forward_constants, unflatten
from pipeline.core.train import Data, Hparams, Settings, init_row, train_step
from pipeline.core.unit_draws import make_unit_draws

DEFAULT_WIDTHS = (64, 128, 256, 512, 1024, 2048)
STACKS = {"hidden": "hidden", "blocks": "block"}  # scanned stacks: one entry per layer


class CoordData(NamedTuple):
    """Mean |coordinate| per trial, width, step and layer (seeds averaged)."""

    widths: tuple[int, ...]
    layers: tuple[str, ...]
    mean_abs: np.ndarray  # [trials, widths, steps + 1, layers]


def _sown(tree: dict, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], jax.Array]]:
    """Every value the model ``sow``ed, with its path (a sown value is a 1-tuple), in sorted
    order: a traced dict keeps the order of the calls, one that went through a pytree (as
    ``eval_shape``'s) is sorted."""
    out = []
    for k, v in sorted(tree.items()):
        if isinstance(v, dict):
            out += _sown(v, (*path, k))
        else:
            out.append(((*path, k), v[0] if isinstance(v, tuple) else v))
    return out


def layer_names(inter: dict) -> list[str]:
    """The names of ``record``'s entries, in its order: ``input`` (the first layer's
    pre-activation), ``hidden_<i>`` (the MLP's and CNN's i-th stacked layer), ``block_<i>.<what>``
    (a residual block's sown values: ``pre`` the branch's hidden pre-activation, ``stream`` the
    stream after the block), ``input.<what>`` (other values sown before the stack), ``logits``."""
    return [name for _, name in _entries(inter)]


def display_order(inter: dict) -> list[int]:
    """``record``'s entries from the input to the logits, layer by layer."""
    entries = _entries(inter)
    return sorted(range(len(entries)), key=lambda i: entries[i][0])


def _entries(inter: dict) -> list[tuple[tuple, str]]:
    """(sort key, name) of each entry of ``record``, in its order."""
    out = []
    for path, value in _sown(inter):
        if path[0] in STACKS:
            rest = ".".join(path[1:])
            plain = rest == "pre" and path[0] == "hidden"  # an MLP's or CNN's hidden layer
            for i in range(value.shape[0]):
                stacked = f"{STACKS[path[0]]}_{i + 1}"
                out.append(((1, i, rest), stacked if plain else f"{stacked}.{rest}"))
        else:
            name = "input" if path == ("pre",) else "input." + ".".join(path)
            out.append(((0, 0, name), name))
    return [*out, ((2, 0, ""), "logits")]


def record(net: Net, params: dict, x: jax.Array, hp: Hparams) -> jax.Array:
    """Mean |.| of each sown layer value (a user's module: each captured layer's output, over
    all its calls) and of the logits, in ``layer_names`` (``_captured_names``) order."""
    if net.builtin is None:
        logits, layers = _captured(net, params, x)
        parts = [
            jnp.mean(jnp.concatenate([jnp.abs(v).ravel() for v in outs])) for _, outs in layers
        ]
        return jnp.stack([*parts, jnp.mean(jnp.abs(logits))])
    slope = hp.values["model.negative_slope"]
    logits, state = net.builtin.apply(
        {"params": params}, x, hp.depth, slope, mutable=["intermediates"], **forward_constants(hp)
    )
    parts = []
    for path, value in _sown(state["intermediates"]):
        if path[0] in STACKS:  # [layers, ...]: one mean per layer
            parts.append(jnp.mean(jnp.abs(value.reshape(value.shape[0], -1)), axis=1))
        else:
            parts.append(jnp.mean(jnp.abs(value))[None])
    return jnp.concatenate([*parts, jnp.mean(jnp.abs(logits))[None]])


def _captured(net: Net, params: dict, x: jax.Array) -> tuple[jax.Array, list]:
    """A user's module: its logits and ``[(module path, (output, ...))]`` of its dense and
    convolution layers (``Net.capture``), in the order the module first uses their kernels; the
    layer whose output the module returns as it is (the read-out) is left to the logits."""
    logits, found = net.capture(params, x)
    first: dict[str, int] = {}
    for i, leaf in enumerate(net.layout.kernels):
        first.setdefault(leaf.path.rpartition("/")[0], i)
    paths = sorted(found, key=lambda path: first.get(path, len(first)))
    return logits, [(p, found[p]) for p in paths if not any(v is logits for v in found[p])]


def _captured_names(net: Net, x: jax.Array) -> list[str]:
    """``record``'s entries for a user's module: the layers' module paths, then ``logits``
    (from shapes alone: nothing is computed)."""
    names: list[str] = []

    def logits():
        params = unflatten({leaf.path: jnp.zeros(leaf.shape) for leaf in net.layout.leaves})
        out, layers = _captured(net, params, x)
        names.extend(path for path, _ in layers)
        return out

    try:
        jax.eval_shape(logits)
    except Exception as e:  # e.g. a layer inside a transform that cannot sow (nn.scan)
        from pipeline.engine.factory import said

        raise ConfigError(f"coord-check cannot record the module's layers: {said(e)}") from None
    return [*names, "logits"]


def _check_width_argument(trial: TrialSpec) -> None:
    """A user's module is built at each width by its factory: refuse one without ``width``."""
    from pipeline.engine.factory import FACTORY_ARGS, factory_takes

    if trial["model.kind"] in BUILTIN_KINDS:
        return
    spec = trial["model.factory"]
    if not spec:
        raise ConfigError("model.kind=custom needs model.factory=<module>:<function>")
    takes = factory_takes(spec)
    if "width" not in takes:
        raise ConfigError(
            f"coord-check builds the module at each width: model.factory={spec} needs a width "
            f"argument (it takes: {', '.join(takes) or 'none'}; the engine passes "
            f"{', '.join(FACTORY_ARGS)})"
        )


def coord_row(net: Net, settings: Settings, steps: int, hp: Hparams, units: dict, data: Data):
    """One row (trial x seed): ``record`` at initialization and after each of ``steps`` engine
    training steps on ``data``'s batch: [steps + 1, layers]."""
    state = init_row(net, settings, hp, units, data)

    def step(state, _):
        seen = record(net, state.params, data.x_train, hp)
        state, _ = train_step(net, settings, hp, jnp.bool_(True), data, state)
        return state, seen

    state, seen = jax.lax.scan(step, state, None, length=steps)
    return jnp.concatenate([seen, record(net, state.params, data.x_train, hp)[None]])


def coord_data(
    cfg, trials: Sequence[TrialSpec], widths: Sequence[int], seeds: int, steps: int, batch: int
) -> CoordData:
    """Train ``trials`` (same network, any parametrizations, optimizer settings and learning
    rates: one call per width) at each width for ``steps`` steps, ``seeds`` seeds each."""
    from pipeline.engine import Engine
    from pipeline.engine.datasets import load_dataset
    from pipeline.engine.plan import draws_for, settings_from
    from pipeline.engine.rows import row_hparams, stack_rows, trial_rules

    for trial in trials:
        _check_width_argument(trial)
    optimizers = {t["train.optimizer"] for t in trials}
    if len(optimizers) > 1:
        raise ConfigError(f"coord-check trains one optimizer per call, got {sorted(optimizers)}")
    dataset = load_dataset(cfg.data)
    if batch > len(dataset.y_train):
        raise ConfigError(f"--batch={batch} is larger than the {len(dataset.y_train)} samples")
    engine = Engine(cfg, dataset, Space())
    x, y = (jnp.asarray(a[:batch]) for a in dataset[:2])
    # Every step trains on the recorded batch: the schedule repeats its indices.
    schedule = jnp.broadcast_to(jnp.arange(batch, dtype=jnp.int32), (seeds, steps, batch))
    data = Data(x, y, x, y, schedule)
    settings = settings_from(cfg, optimizers.pop(), trials)._replace(
        batch_size=batch, chunk_steps=steps, diagnostics=False
    )
    base = {"model.base_width": trials[0]["model.base_width"] or trials[0]["model.width"]}
    weights = [t["init.weights"] for t in trials]
    weights += [r["weights"] for t in trials for r in trial_rules(t) if "weights" in r]
    draws = draws_for(weights)
    raw = _largest_draws(engine, trials[0].with_values(base), max(widths), draws, seeds)
    values, names, order = [], None, []
    for width in widths:
        sized = [t.with_values({**base, **{"model.width": width}}) for t in trials]
        structures = {engine.structure_of(t) for t in sized}
        if len(structures) > 1:
            raise ConfigError("coord-check compares trials of one network (model.* alike)")
        structure = structures.pop()
        net = engine.net(structure)
        units = make_unit_draws(net, draws).finish(_leading_block(raw, net.layout))
        rows = [
            row_hparams(t, net.layout, structure, draws, s) for t in sized for s in range(seeds)
        ]
        if names is None and net.builtin is None:  # before training: a failure is one line
            names = _captured_names(net, x)
            order = list(range(len(names)))
        elif names is None:
            inter = _sown_shapes(net, x, rows[0])
            names, order = layer_names(inter), display_order(inter)
        hp = stack_rows(rows)
        run = jax.jit(jax.vmap(functools.partial(coord_row, net, settings, steps), (0, None, None)))
        out = np.asarray(run(hp, units, data)).reshape(len(trials), seeds, steps + 1, -1)
        values.append(out.mean(axis=1))
    mean_abs = np.stack(values, axis=1)[..., order]
    return CoordData(tuple(widths), tuple(names[i] for i in order), mean_abs)


def _largest_draws(engine, trial: TrialSpec, width: int, draws, seeds: int) -> dict:
    """The raw unit draws of the network at ``width`` (the largest), on the host: every smaller
    width takes their leading block (``_leading_block``). Entries are i.i.d., so a block is a
    fresh draw of its own shape, and the sampler compiles once instead of once per width."""
    net = engine.net(engine.structure_of(trial.with_values({"model.width": width})))
    key = jax.random.key(engine.cfg.train.seed)
    return jax.device_get(make_unit_draws(net, draws).raw(key, seeds))


def _leading_block(raw: dict, layout) -> dict:
    """Each leaf's draws cut to its shape in ``layout``: the leading block along every axis
    (seed and draw axes kept whole); ``UnitSampler.finish`` then orthonormalizes as usual."""
    out = {}
    for leaf in layout.leaves:
        a = raw.get(leaf.path)
        lead = 0 if a is None else a.ndim - len(leaf.shape)
        if a is None or any(d > n for d, n in zip(leaf.shape, a.shape[lead:])):
            raise ConfigError(
                f"coord-check: the parameter {leaf.path} of shape {leaf.shape} is not part of "
                "the same parameter at the largest width (the module must only grow with width)"
            )
        out[leaf.path] = a[(slice(None),) * lead + tuple(slice(0, d) for d in leaf.shape)]
    return out


def _sown_shapes(net: Net, x: jax.Array, hp: Hparams) -> dict:
    """The shapes of what the model sows on ``x`` (nothing is computed)."""
    params = unflatten({leaf.path: jnp.zeros(leaf.shape) for leaf in net.layout.leaves})
    slope = hp.values["model.negative_slope"]

    def sown():
        return net.builtin.apply(
            {"params": params}, x, hp.depth, slope, mutable=["intermediates"],
            **forward_constants(hp),
        )[1]["intermediates"]  # fmt: skip

    return jax.eval_shape(sown)


def slopes(data: CoordData) -> np.ndarray:
    """Least-squares slope of log mean|x| against log width: [trials, steps + 1, layers]; NaN
    where a value is 0 (a zero read-out's logits at initialization) or not finite."""
    logw = np.log(np.asarray(data.widths, float))
    values = np.moveaxis(data.mean_abs, 1, -1)  # [trials, steps + 1, layers, widths]
    ok = np.all(np.isfinite(values) & (values > 0), axis=-1)
    logv = np.log(np.where(ok[..., None], values, 1.0))
    centred = logw - logw.mean()
    fitted = (logv - logv.mean(-1, keepdims=True)) @ centred / (centred @ centred)
    return np.where(ok, fitted, np.nan)


def slopes_json(data: CoordData, trial: int = 0) -> dict:
    """``{"slopes": {layer: {step: slope}}, "widths": [...]}`` of one trial (NaN as None)."""
    s = slopes(data)[trial]
    table = {
        name: {str(t): (None if math.isnan(s[t, j]) else round(float(s[t, j]), 4))
               for t in range(s.shape[0])}
        for j, name in enumerate(data.layers)
    }  # fmt: skip
    return {"slopes": table, "widths": list(data.widths)}


def plot(data: CoordData, trial: int, title: str, path: Path) -> Path:
    """One panel per step, log-log mean |x| against width, one line per layer (the mup README's
    figure); the logits in black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = data.mean_abs[trial]  # [widths, steps + 1, layers]
    n_steps = values.shape[1]
    fig, axes = plt.subplots(1, n_steps, figsize=(3.2 * n_steps, 3.4), sharey=True)
    axes = np.atleast_1d(axes)
    colors = plt.cm.viridis(np.linspace(0, 0.9, max(1, len(data.layers) - 1)))
    for t, ax in enumerate(axes):
        for j, name in enumerate(data.layers):
            logits = name == "logits"
            ax.plot(
                data.widths, values[:, t, j], marker="o", markersize=3,
                color="black" if logits else colors[j], lw=2 if logits else 1,
                label=name,
            )  # fmt: skip
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"step {t}" if t else "step 0 (init)")
        ax.set_xlabel("width")
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("mean |x|")
    axes[-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _model_name(trial: TrialSpec) -> str:
    """The built-in kind, or a user's factory (``examples.resnet.make_model``)."""
    if trial["model.kind"] in BUILTIN_KINDS:
        return trial["model.kind"]
    return trial["model.factory"].replace(":", ".")


def figure_name(trial: TrialSpec) -> str:
    """``<model>_<parametrization>_<optimizer>_lr<rate>``: one file per configuration."""
    return (
        f"{_model_name(trial)}_{trial['init.parametrization']}_{trial['train.optimizer']}"
        f"_lr{trial['train.learning_rate']:g}"
    )


def title_of(trial: TrialSpec, seeds: int, batch: int) -> str:
    base = trial["model.base_width"] or trial["model.width"]
    return (
        f"{_model_name(trial)} depth {trial['model.depth']}, {trial['init.parametrization']} "
        f"(base width {base}), {trial['train.optimizer']} lr {trial['train.learning_rate']:g}, "
        f"{seeds} seeds, batch {batch}: mean |pre-activation| per layer"
    )
