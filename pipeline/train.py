"""The pure training core: initialize and train a batch of trials in one compiled call.

``make_train(structure, settings)`` returns ``(init_fn, chunk_fn)``, both ``jax.jit`` of a
``jax.vmap`` over rows (one row = one trial x one seed). ``chunk_fn`` runs ``settings.chunk_steps``
optimizer steps with ``lax.scan`` and returns the row states and that chunk's curves; the host
calls it once per chunk, which is where Optuna's pruner gets its intermediate values. Everything
per row that is a number (initializer draw and scales, bias moments, learning rate, momentum,
clipping, leaky slope, depth, seed) is a traced array, so one executable serves every trial of a
structure. Metrics (steps to target, explosions, vanishing steps, divergence) are accumulated
inside the compiled call; a NaN is a value like any other and never stops the batch.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from pipeline.initializers import unit_draw
from pipeline.model import MLP, Structure, kernel_norms

OPTIMIZERS = ("sgd", "momentum", "adam")


class Settings(NamedTuple):
    """Static per executable: changing any of these compiles a new one."""

    optimizer: str = "sgd"
    batch_size: int = 128
    chunk_steps: int = 50
    smoothing: float = 0.9  # EMA factor of the training loss that steps_to_target watches
    target_loss: float = 0.5
    explode_threshold: float = 1e3
    vanish_threshold: float = 1e-6
    unroll: int = 1


class Hparams(NamedTuple):
    """Per-row numbers, traced: rows with different values share the executable."""

    draw: jax.Array  # int32 index into the sweep's tuple of unit draws
    scale: jax.Array  # f32[3]: weight scale of the input, hidden and output layers
    bias_mean: jax.Array
    bias_std: jax.Array
    learning_rate: jax.Array
    momentum: jax.Array
    clip_norm: jax.Array  # inf = no clipping
    slope: jax.Array  # leaky ReLU negative slope
    depth: jax.Array  # int32 hidden layers, <= structure.n_hidden
    seed: jax.Array  # int32 seed index: picks the init key and the mini-batch order


class Data(NamedTuple):
    x_train: jax.Array
    y_train: jax.Array
    x_val: jax.Array
    y_val: jax.Array
    batches: jax.Array  # int32[seeds, steps, batch_size]: sample indices per seed and step


class RowState(NamedTuple):
    params: dict
    opt_state: optax.OptState
    step: jax.Array
    ema_loss: jax.Array
    initial_loss: jax.Array
    hit_step: jax.Array  # first step whose smoothed loss <= target, -1 while not reached
    explosions: jax.Array
    vanishings: jax.Array
    diverged: jax.Array


class ChunkOut(NamedTuple):
    loss: jax.Array  # [chunk_steps] mini-batch loss before each update
    grad_norm: jax.Array  # [chunk_steps] global gradient norm
    layer_grad_norm: jax.Array  # [layers] kernel-gradient norms at the chunk's first step
    val_loss: jax.Array
    val_accuracy: jax.Array


def make_optimizer(kind: str, hp: Hparams) -> optax.GradientTransformation:
    """Optax chain: clipping by global norm (inf = off), then the optimizer, traced numbers."""
    if kind == "sgd":
        opt = optax.sgd(hp.learning_rate)
    elif kind == "momentum":
        opt = optax.sgd(hp.learning_rate, momentum=hp.momentum)
    elif kind == "adam":
        opt = optax.adam(hp.learning_rate)
    else:
        raise ValueError(f"unknown optimizer {kind!r}; allowed: {', '.join(OPTIMIZERS)}")
    return optax.chain(optax.clip_by_global_norm(hp.clip_norm), opt)


class Shape(NamedTuple):
    """Layer shapes only: unit draws depend on these, not on the activation."""

    n_hidden: int
    width: int
    n_in: int
    n_classes: int


def shape_of(structure: Structure) -> Shape:
    return Shape(structure.n_hidden, structure.width, structure.n_in, structure.n_classes)


def make_unit_draws(shape: Shape, draws: tuple[str, ...]):
    """Jitted ``(key, seeds) -> units``: every unit draw of every layer, per seed index.

    Sampling happens once per sweep and shape, outside the training executable (threefry inside
    the training call tripled its compile time). Rows then pick their draw by index and multiply
    by their scale, so trials that share a seed share the same random directions and differ only
    in distribution and scale: common random numbers make their comparison sharper.
    """
    w = shape.width

    def per_seed(key):
        k_in, k_hidden, k_out, k_bias = jax.random.split(key, 4)

        def stacked(k, kernel_shape):
            return jnp.stack([unit_draw(d, k, kernel_shape) for d in draws])

        units = {
            "input": stacked(k_in, (shape.n_in, w)),
            "output": stacked(k_out, (w, shape.n_classes)),
            "bias": jax.random.normal(k_bias, (shape.n_hidden, w)),
            "output_bias": jax.random.normal(jax.random.fold_in(k_bias, 1), (shape.n_classes,)),
        }
        if shape.n_hidden > 1:
            # fold_in(layer) rather than split(n): layer i gets the same key whatever the stack
            # height, so a masked deep stack starts exactly like the real shallower network.
            keys = jax.vmap(functools.partial(jax.random.fold_in, k_hidden))(
                jnp.arange(shape.n_hidden - 1)
            )
            units["hidden"] = jax.vmap(lambda k: stacked(k, (w, w)), out_axes=1)(keys)
        return units

    def sample(key: jax.Array, n_seeds: int):
        keys = jax.vmap(functools.partial(jax.random.fold_in, key))(jnp.arange(n_seeds))
        return jax.vmap(per_seed)(keys)

    return jax.jit(sample, static_argnums=1)


def init_params(units: dict, hp: Hparams, n_hidden: int) -> dict:
    """One row's parameters, in the tree layout of ``MLP``'s Flax parameters."""
    code = hp.draw
    s = jax.tree.map(lambda u: u[hp.seed], units)
    biases = hp.bias_mean + hp.bias_std * s["bias"]
    params = {
        "input": {"kernel": hp.scale[0] * s["input"][code], "bias": biases[0]},
        "output": {
            "kernel": hp.scale[2] * s["output"][code],
            "bias": hp.bias_mean + hp.bias_std * s["output_bias"],
        },
    }
    if n_hidden > 1:
        params["hidden"] = {
            "dense": {"kernel": hp.scale[1] * s["hidden"][code], "bias": biases[1:]}
        }
    return params


def make_train(structure: Structure, settings: Settings):
    """``(init_fn, chunk_fn)`` for one structure; both are vmapped over rows and jitted."""
    model = MLP(structure, unroll=settings.unroll)

    def loss_fn(params, hp: Hparams, x, y):
        logits = model.apply({"params": params}, x, hp.depth, hp.slope)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

    def init_row(hp: Hparams, units: dict) -> RowState:
        params = init_params(units, hp, structure.n_hidden)
        opt_state = make_optimizer(settings.optimizer, hp).init(params)
        zero = jnp.zeros((), jnp.int32)
        nan = jnp.full((), jnp.nan)
        return RowState(params, opt_state, zero, nan, nan, zero - 1, zero, zero, jnp.bool_(False))

    def chunk_row(state: RowState, hp: Hparams, active: jax.Array, data: Data):
        tx = make_optimizer(settings.optimizer, hp)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        def train_step(state: RowState, _):
            idx = data.batches[hp.seed, state.step]
            (loss, _), grads = grad_fn(state.params, hp, data.x_train[idx], data.y_train[idx])
            layer_norms = kernel_norms(grads)
            grad_norm = optax.tree.norm(grads)
            updates, opt_state = tx.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            first = state.step == 0
            ema = jnp.where(
                first, loss, settings.smoothing * state.ema_loss + (1 - settings.smoothing) * loss
            )
            hit = (state.hit_step < 0) & (ema <= settings.target_loss)
            exploded = ~jnp.isfinite(grad_norm) | (grad_norm > settings.explode_threshold)
            vanished = layer_norms[0] < settings.vanish_threshold
            new = RowState(
                params=params,
                opt_state=opt_state,
                step=state.step + 1,
                ema_loss=ema,
                initial_loss=jnp.where(first, loss, state.initial_loss),
                hit_step=jnp.where(hit, state.step, state.hit_step),
                explosions=state.explosions + exploded,
                vanishings=state.vanishings + vanished,
                diverged=state.diverged | ~jnp.isfinite(loss),
            )
            # Inactive rows (pruned trials, padding) keep their state: their work is discarded.
            new = jax.tree.map(lambda n, o: jnp.where(active, n, o), new, state)
            return new, (loss, grad_norm, layer_norms)

        state, (loss, grad_norm, layer_norms) = jax.lax.scan(
            train_step, state, None, length=settings.chunk_steps
        )
        val_loss, logits = loss_fn(state.params, hp, data.x_val, data.y_val)
        val_accuracy = jnp.mean(jnp.argmax(logits, -1) == data.y_val)
        return state, ChunkOut(loss, grad_norm, layer_norms[0], val_loss, val_accuracy)

    init_fn = jax.jit(jax.vmap(init_row, in_axes=(0, None)))
    chunk_fn = jax.jit(jax.vmap(chunk_row, in_axes=(0, 0, 0, None)), donate_argnums=0)
    return init_fn, chunk_fn
