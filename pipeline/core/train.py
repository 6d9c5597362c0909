"""The pure training core: initialize and train a batch of trials in one compiled call.

``make_train(structure, settings)`` returns pure per-row ``init`` and ``chunk`` functions (one
row = one trial x one seed); the engine applies ``jax.jit(jax.vmap(...))`` and sharding. ``chunk``
runs ``settings.chunk_steps`` optimizer steps with ``lax.scan`` and returns the row's state and
that chunk's curves; the host calls it once per chunk, which is where Optuna's pruner gets its
intermediate values. The mini-batch schedule holds train.steps steps: when chunks do not divide
it, the last chunk's steps past its end are masked (computed, changing nothing), so every chunk
shares one executable. Everything
per row that is a number (initializer draw and scales, bias moments, learning rate and its
per-layer multipliers and warmup, momentum, clipping, leaky slope, depth, seed) is a traced
array, so one executable serves every trial of a structure. Metrics (steps to target,
explosions, vanishing steps, divergence) are accumulated inside the compiled call; a NaN is a
value like any other and never stops the batch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from pipeline.core import losses, metrics
from pipeline.core.diagnostics import Probe, measure
from pipeline.core.initializers import uniform_from_normal
from pipeline.core.lsuv import lsuv
from pipeline.core.model import Residual
from pipeline.core.names import OPTIMIZERS, check_registry
from pipeline.core.net import Layout, Net, kernel_norms, unflatten

# Each optimizer's direction, before its learning rate (pipeline.core.names.OPTIMIZERS).
DIRECTIONS = {
    "sgd": lambda hp: optax.identity(),
    # optax.sgd's own chain: trace, then the learning rate
    "momentum": lambda hp: optax.trace(decay=hp.values["train.momentum"]),
    "adam": lambda hp: optax.scale_by_adam(),  # optax.adam's: scale_by_adam, then the rate
}
check_registry(DIRECTIONS, OPTIMIZERS)


class Settings(NamedTuple):
    """Static per executable: changing any of these compiles a new one."""

    # No defaults: every value comes from the trial's config (pipeline.config.schema).
    optimizer: str
    batch_size: int
    chunk_steps: int
    smoothing: float  # EMA factor of the training loss that steps_to_target watches
    target_loss: float
    explode_threshold: float
    vanish_threshold: float
    unroll: int = 1
    dropout: bool = False  # some row of the call uses dropout: compile the random masks
    weight_decay: bool = False  # some row uses weight decay: compile the decay
    lsuv: bool = False  # some row uses LSUV: compile its data-dependent rescaling
    diagnostics: bool = True  # probe every layer at each chunk's start and end


class Hparams(NamedTuple):
    """Per-row numbers, traced: rows with different values share the executable."""

    # Per parameter leaf of the layout (``pipeline.core.net``), in its order:
    draw: jax.Array  # int32[kernels]: index into the sweep's tuple of unit draws
    scale: jax.Array  # f32[kernels]: std, limit, value or multiplier of each kernel
    bias_mean: jax.Array  # f32[biases]
    bias_std: jax.Array  # f32[biases]
    other_scale: jax.Array  # f32[others]: multiplier of the module's own initial values
    gain: jax.Array  # the trial's gain: LSUV's target output std
    clip_norm: jax.Array  # inf = no clipping
    lsuv: jax.Array  # bool: LSUV-rescale this row's initial weights (Settings.lsuv)
    depth: jax.Array  # int32 hidden layers, <= structure.n_hidden
    seed: jax.Array  # int32 seed index: picks the init key and the mini-batch order
    # The config keys the schema marks ``row=True``, as they are (float32), by dotted key:
    # model.negative_slope, model.dropout, train.learning_rate, train.momentum, ...
    values: dict[str, jax.Array]
    residual: Residual | None = None  # model.kind=resmlp: init.residual's forward constants
    # model.kind=transformer: the attention logit scale (model.attention_scale as a number)
    attention_scale: jax.Array | None = None
    # f32[leaves], every leaf of the layout in its order: the learning-rate multiplier of
    # init.parametrization (``pipeline.core.parametrization``); None = 1 for every leaf
    lr_scale: jax.Array | None = None
    # f32[leaves], likewise: the multiplier of train.weight_decay (μP rescales coupled decay with
    # the learning rate, as the mup library does); None = 1 for every leaf
    decay_scale: jax.Array | None = None
    # bool[biases]: draw this bias uniform (PyTorch's default bias, ``initializers.bias_draw``)
    # rather than normal, from the same standard normal; None = normal for every bias
    bias_uniform: jax.Array | None = None
    # int32: the row's activation among a merged structure's (``activations.names_of``); None
    # when the structure has one activation
    activation: jax.Array | None = None


class Data(NamedTuple):
    x_train: jax.Array
    y_train: jax.Array
    x_val: jax.Array
    y_val: jax.Array
    # int32[seeds, steps, batch_size]: sample indices per seed and step; its length is the
    # training budget (train.steps): ``chunk_row`` masks the steps past it
    batches: jax.Array


class RowState(NamedTuple):
    params: dict
    opt_state: optax.OptState
    step: jax.Array
    running: metrics.Running  # what each step adds to the trial's metrics (pipeline.core.metrics)


class ChunkOut(NamedTuple):
    loss: jax.Array  # [chunk_steps] mini-batch loss before each update (NaN: a masked step)
    grad_norm: jax.Array  # [chunk_steps] global gradient norm (NaN: a masked step)
    probe_start: Probe | None  # diagnostics before the chunk's first step (init for the first)
    probe_end: Probe | None  # and after its last step; None with Settings.diagnostics off
    val_loss: jax.Array
    val_accuracy: jax.Array | None  # None for a regression (``pipeline.core.losses``)


class LeafRateState(NamedTuple):
    count: jax.Array  # int32 updates so far: the warmup's step


def warmup_factor(count: jax.Array, warmup_steps: jax.Array | None) -> jax.Array:
    """Linear warmup (Goyal et al. 2017, "Accurate, Large Minibatch SGD", section 2.2): update
    k (from 0) uses min(1, (k+1) / warmup_steps) of the learning rate; 0 steps = off."""
    if warmup_steps is None:
        return jnp.ones((), jnp.float32)
    ramp = (count + 1).astype(jnp.float32) / jnp.maximum(warmup_steps, 1.0)
    return jnp.where(warmup_steps > 0, jnp.minimum(1.0, ramp), 1.0)


def scale_by_leaf_rate(
    learning_rate: jax.Array, warmup_steps: jax.Array | None, leaf_scale: dict | None
) -> optax.GradientTransformation:
    """Multiply each leaf's update by -(learning rate x warmup factor x the leaf's multiplier):
    ``optax.scale_by_learning_rate`` with a schedule, per leaf, in one pass. ``leaf_scale``: a
    tree of scalars shaped like the parameters (None: 1 everywhere). SGD, momentum and Adam are
    linear in their rate after their direction, so this is a per-layer learning rate for each."""

    def init_fn(params):
        del params
        return LeafRateState(jnp.zeros((), jnp.int32))

    def update_fn(updates, state, params=None):
        del params
        rate = -learning_rate * warmup_factor(state.count, warmup_steps)
        if leaf_scale is None:
            updates = jax.tree.map(lambda u: (rate * u).astype(u.dtype), updates)
        else:
            updates = jax.tree.map(lambda u, m: (rate * m * u).astype(u.dtype), updates, leaf_scale)
        return updates, LeafRateState(optax.safe_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)


def add_leaf_decayed_weights(
    weight_decay: jax.Array, leaf_scale: dict | None
) -> optax.GradientTransformation:
    """L2 weight decay added to the gradient, g + weight_decay x the leaf's multiplier x w:
    ``optax.add_decayed_weights`` per leaf (``leaf_scale`` a tree of scalars; None: itself)."""
    if leaf_scale is None:
        return optax.add_decayed_weights(weight_decay)

    def update_fn(updates, state, params):
        # (decay x 1) x w is decay x w bit for bit: an SP row decays exactly as optax's own
        updates = jax.tree.map(
            lambda g, p, m: g + (weight_decay * m) * p, updates, params, leaf_scale
        )
        return updates, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def leaf_tree(values: jax.Array, layout: Layout) -> dict:
    """A per-leaf vector (layout order) as a tree of scalars shaped like the parameters."""
    return unflatten({leaf.path: values[i] for i, leaf in enumerate(layout.leaves)})


def make_optimizer(
    kind: str, hp: Hparams, decay: bool = True, layout: Layout | None = None
) -> optax.GradientTransformation:
    """Optax chain, traced numbers: clipping by global norm (inf = off), L2 weight decay added
    to the gradient (0 = off; for Adam this is L2 regularization, not AdamW), the optimizer's
    direction (plain, momentum, Adam), then its learning rate: train.learning_rate times the
    warmup factor (train.warmup_steps) times each leaf's multiplier (``hp.lr_scale`` over
    ``layout``: init.parametrization's per-layer rates; the decay times ``hp.decay_scale``)."""
    if kind not in DIRECTIONS:
        raise ValueError(f"unknown optimizer {kind!r}; allowed: {', '.join(OPTIMIZERS)}")
    direction = DIRECTIONS[kind](hp)
    per_leaf = None if hp.lr_scale is None or layout is None else leaf_tree(hp.lr_scale, layout)
    rate = scale_by_leaf_rate(
        hp.values["train.learning_rate"], hp.values.get("train.warmup_steps"), per_leaf
    )
    clip = optax.clip_by_global_norm(hp.clip_norm)
    if not decay:  # no row of the call decays: skip a pass over every parameter per step
        return optax.chain(clip, direction, rate)
    scale = None if hp.decay_scale is None or layout is None else leaf_tree(hp.decay_scale, layout)
    decayed = add_leaf_decayed_weights(hp.values["train.weight_decay"], scale)
    return optax.chain(clip, decayed, direction, rate)


def init_params(units: dict, hp: Hparams, layout: Layout) -> dict:
    """One row's parameters, in the tree layout of the module's Flax parameters: each kernel its
    draw times its scale, each bias its mean plus std times its unit draw (its normal draw, or
    where ``hp.bias_uniform`` says so that normal made uniform: ``initializers.bias_unit``),
    each other leaf the module's own value times its scale."""
    s = {path: u[hp.seed] for path, u in units.items()}
    flat = {}
    for i, leaf in enumerate(layout.kernels):
        flat[leaf.path] = hp.scale[i] * s[leaf.path][hp.draw[i]]
    for i, leaf in enumerate(layout.biases):
        unit = s[leaf.path]
        if hp.bias_uniform is not None:
            unit = jnp.where(hp.bias_uniform[i], uniform_from_normal(unit), unit)
        flat[leaf.path] = hp.bias_mean[i] + hp.bias_std[i] * unit
    for i, leaf in enumerate(layout.others):
        flat[leaf.path] = hp.other_scale[i] * s[leaf.path]
    return unflatten({leaf.path: flat[leaf.path] for leaf in layout.leaves})


class TrainFns(NamedTuple):
    """One structure's pure per-row functions; the engine applies ``jit(vmap(...))``.

    ``init(hp, units, data) -> RowState``; ``chunk(state, hp, active, data) -> (RowState,
    ChunkOut)``: ``settings.chunk_steps`` optimizer steps of one row (one trial x one seed),
    those past the end of ``data.batches`` masked.
    """

    init: Callable
    chunk: Callable


def make_train(net: Net, settings: Settings) -> TrainFns:
    """The per-row ``init`` and ``chunk`` functions of one network and its static settings."""
    return TrainFns(
        init=functools.partial(init_row, net, settings),
        chunk=functools.partial(chunk_row, net, settings),
    )


def loss_fn(net: Net, params, hp: Hparams, x, y, key=None):
    """The task's loss (``pipeline.core.losses``); with a ``key`` (training), dropout is on."""
    outputs = net.apply(params, x, hp, key)
    return losses.loss(outputs, y), outputs


def init_row(net: Net, settings: Settings, hp: Hparams, units: dict, data: Data) -> RowState:
    """One row's parameters (LSUV-rescaled where the row asks for it) and optimizer state."""
    params = init_params(units, hp, net.layout)
    if settings.lsuv:
        x = data.x_train[data.batches[hp.seed, 0]]  # the row's first mini-batch
        slope = hp.values["model.negative_slope"]
        activation = net.builtin.structure.activation
        rescaled = lsuv(params, x, hp.depth, slope, activation, hp.gain, hp.activation)
        params = jax.tree.map(lambda a, b: jnp.where(hp.lsuv, a, b), rescaled, params)
    tx = make_optimizer(settings.optimizer, hp, settings.weight_decay, net.layout)
    opt_state = tx.init(params)
    return RowState(params, opt_state, jnp.zeros((), jnp.int32), metrics.start_running())


def train_step(
    net: Net, settings: Settings, hp: Hparams, active: jax.Array, data: Data, state: RowState
) -> tuple[RowState, tuple[jax.Array, jax.Array]]:
    """One optimizer step of one row; an inactive row (pruned trial, padding) keeps its state."""
    # A masked step past the schedule's end (``chunk_row``) reads its last mini-batch.
    idx = data.batches[hp.seed, jnp.minimum(state.step, data.batches.shape[1] - 1)]
    key = None
    if settings.dropout or net.needs_key:
        # threefry, though it costs compile time: "rbg" keys draw different bits under vmap, so
        # a trial's masks (and metrics) would depend on its row in the batch.
        key = jax.random.fold_in(jax.random.key(hp.seed), state.step)
    x, y = data.x_train[idx], data.y_train[idx]
    grad_fn = jax.value_and_grad(functools.partial(loss_fn, net), has_aux=True)
    (loss, _), grads = grad_fn(state.params, hp, x, y, key)
    grad_norm = optax.tree.norm(grads)
    tx = make_optimizer(settings.optimizer, hp, settings.weight_decay, net.layout)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    running = metrics.update_running(
        state.running, state.step, loss, grad_norm, kernel_norms(grads, net.layout)[0], settings
    )
    new = RowState(optax.apply_updates(state.params, updates), opt_state, state.step + 1, running)
    new = jax.tree.map(lambda n, o: jnp.where(active, n, o), new, state)
    return new, (loss, grad_norm)


def chunk_row(
    net: Net, settings: Settings, state: RowState, hp: Hparams, active: jax.Array, data: Data
) -> tuple[RowState, ChunkOut]:
    """``settings.chunk_steps`` steps of one row, then its validation loss and accuracy (and,
    with Settings.diagnostics, the per-layer probes before and after the chunk). Steps past the
    end of the schedule (a last chunk that train.steps does not fill) leave the state as it is:
    parameters, optimizer state, step and metrics; their curve points are NaN."""
    x_probe, y_probe = data.x_val[: settings.batch_size], data.y_val[: settings.batch_size]

    def probe(params) -> Probe | None:
        if not settings.diagnostics:
            return None
        slope = hp.values["model.negative_slope"]
        return measure(
            net, params, x_probe, y_probe, hp.depth, slope, hp.residual, hp.attention_scale,
            hp.activation,
        )  # fmt: skip

    def step(state: RowState, _):
        return train_step(net, settings, hp, active, data, state)

    def step_within_budget(state: RowState, _):
        # Computed (the executable is shared by every chunk) but changing nothing; the host
        # keeps the first train.steps curve points.
        live = active & (state.step < data.batches.shape[1])
        new, (loss, grad_norm) = train_step(net, settings, hp, live, data, state)
        nan = jnp.full((), jnp.nan, loss.dtype)
        return new, (jnp.where(live, loss, nan), jnp.where(live, grad_norm, nan))

    # A step count that chunks divide never reaches past the schedule: no mask is compiled,
    # and such a run trains bit for bit as it did before a last chunk could be partial.
    ragged = data.batches.shape[1] % settings.chunk_steps != 0
    probe_start = probe(state.params)
    body = step_within_budget if ragged else step
    state, (loss, grad_norm) = jax.lax.scan(body, state, None, length=settings.chunk_steps)
    val_loss, outputs = loss_fn(net, state.params, hp, data.x_val, data.y_val)
    val_accuracy = losses.accuracy(outputs, data.y_val)
    out = ChunkOut(loss, grad_norm, probe_start, probe(state.params), val_loss, val_accuracy)
    return state, out
