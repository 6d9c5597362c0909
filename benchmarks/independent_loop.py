"""A second plain loop, written from scratch without Flax or Optax, to check the first.

``make bench`` runs it beside ``benchmarks.baseline`` on the same trials and quotes the engine's
ratios against the faster of the two: a baseline that is slow by accident would flatter the
engine. Same trials (Optuna's seeded random sampler over the same space), same data and
mini-batch order, the same initializers (``make_initializer``, what a user gets from
``load_initializer``); the network is a list of ``(W, b)`` pairs, the update ``p - lr * g``.

    python -m benchmarks.independent_loop [--out results.json] key=value ...
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import optuna

from benchmarks import baseline
from pipeline.core.activations import ACTIVATIONS
from pipeline.core.initializers import make_bias_initializer, make_initializer, resolve_gain
from pipeline.search.samplers import suggest


def make_objective(cfg, space, results: list):
    ds, x_batches, y_batches = baseline.sliced_batches(cfg)
    steps = cfg.train.steps

    def objective(trial: optuna.Trial) -> float:
        p = {**baseline._base(cfg), **suggest(trial, space)}
        act = ACTIVATIONS[p["model.activation"]].fn
        gain = resolve_gain(p["init.weights"], p["init.gain"], p["model.activation"], 0.01)
        init_w = make_initializer(
            p["init.weights"], gain, {k: p[f"init.{k}"] for k in ("mode", "std", "limit", "value")}
        )
        init_b = make_bias_initializer(p["init.bias"], p["init.bias_value"], p["init.bias_std"])
        sizes = [ds.n_features] + [p["model.width"]] * p["model.depth"] + [ds.n_classes]
        keys = jax.random.split(baseline.trial_key(cfg, trial), 2 * len(sizes))
        layers = [
            (init_w(keys[2 * i], (a, b)), init_b(keys[2 * i + 1], (b,)))
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))
        ]

        def loss_fn(layers, x, y):
            for w, b in layers[:-1]:
                x = act(x @ w + b, 0.01)
            w, b = layers[-1]
            logp = jax.nn.log_softmax(x @ w + b)
            return -jnp.take_along_axis(logp, y[:, None], axis=1).mean()

        lr = p["train.learning_rate"]

        @jax.jit
        def train_step(layers, losses, step, x, y):
            loss, grads = jax.value_and_grad(loss_fn)(layers, x, y)
            layers = jax.tree.map(lambda p, g: p - lr * g, layers, grads)
            norm = jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(grads)))
            return layers, losses.at[:, step].set(jnp.stack([loss, norm]))

        losses = jnp.zeros((2, steps))
        for step in range(steps):
            layers, losses = train_step(layers, losses, step, x_batches[step], y_batches[step])
        metrics = {"steps_to_target": baseline.steps_to_target(*np.asarray(losses), cfg)}
        results.append((trial.params, metrics))
        return metrics["steps_to_target"]

    return objective


if __name__ == "__main__":
    sys.exit(baseline.main(objective_factory=make_objective))
