"""The plain per-trial loop ``make bench`` compares against, written as a typical user would.

Optuna's ``study.optimize`` calls an objective that builds a Flax model, initializes it with the
trial's initializer, defines a jitted train step and runs a Python loop over steps. It trains the
same data, schedule and configurations as the engine and computes the same two headline metrics.
It is given every advantage that does not change its shape: in-memory Optuna storage, no MLflow
logging, and no host sync inside the step loop.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optuna

from pipeline.activations import ACTIVATIONS
from pipeline.data import batch_schedule, load_dataset
from pipeline.initializers import make_bias_initializer, make_initializer, resolve_gain
from pipeline.space import suggest


class PlainMLP(nn.Module):
    depth: int
    width: int
    n_classes: int
    activation: str
    kernel_init: object
    bias_init: object

    @nn.compact
    def __call__(self, x):
        act = ACTIVATIONS[self.activation].fn
        for _ in range(self.depth):
            x = act(
                nn.Dense(self.width, kernel_init=self.kernel_init, bias_init=self.bias_init)(x),
                0.01,
            )
        return nn.Dense(self.n_classes, kernel_init=self.kernel_init, bias_init=self.bias_init)(x)


def make_objective(cfg, space: dict, results: list):
    """An Optuna objective training one trial per call; appends (params, metrics) to results."""
    ds = load_dataset(cfg.data)
    steps = cfg.train.steps
    schedule = batch_schedule(len(ds.y_train), cfg.train.batch_size, steps, 1, cfg.train.seed)[0]
    x_train, y_train = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)

    def objective(trial: optuna.Trial) -> float:
        p = {**_base(cfg), **suggest(trial, space)}
        gain = resolve_gain(p["init.weights"], p["init.gain"], p["model.activation"], 0.01)
        init_params = {k: p[f"init.{k}"] for k in ("mode", "std", "limit", "value")}
        model = PlainMLP(
            p["model.depth"],
            p["model.width"],
            ds.n_classes,
            p["model.activation"],
            make_initializer(p["init.weights"], gain, init_params),
            make_bias_initializer(p["init.bias"], p["init.bias_value"], p["init.bias_std"]),
        )
        params = model.init(jax.random.key(cfg.train.seed + trial.number), x_train[:1])["params"]
        tx = optax.sgd(p["train.learning_rate"])
        opt_state = tx.init(params)

        @jax.jit
        def train_step(params, opt_state, x, y):
            def loss_fn(params):
                logits = model.apply({"params": params}, x)
                return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss, optax.tree.norm(grads)

        losses, norms = [], []
        for step in range(steps):
            idx = schedule[step]
            params, opt_state, loss, norm = train_step(
                params, opt_state, x_train[idx], y_train[idx]
            )
            losses.append(loss)
            norms.append(norm)
        losses, norms = np.asarray(jnp.stack(losses)), np.asarray(jnp.stack(norms))
        metrics = _metrics(losses, norms, cfg)
        results.append((trial.params, metrics))
        return metrics["steps_to_target"]

    return objective


def _base(cfg) -> dict:
    from pipeline.config import to_flat_dict

    return to_flat_dict(cfg, ("model", "init", "train"))


def _metrics(losses: np.ndarray, norms: np.ndarray, cfg) -> dict:
    """steps_to_target and explosion_count, as the engine defines them (metrics.py)."""
    ema = np.empty_like(losses)
    beta = cfg.metrics.smoothing
    for i, loss in enumerate(losses):
        ema[i] = loss if i == 0 else beta * ema[i - 1] + (1 - beta) * loss
    hit = np.flatnonzero(ema <= cfg.train.target_loss)
    exploded = ~np.isfinite(norms) | (norms > cfg.metrics.explode_threshold)
    return {
        "steps_to_target": float(hit[0] + 1 if hit.size else cfg.train.steps + 1),
        "explosion_count": float(exploded.sum()),
    }


def run_loop(cfg, space: dict, n_trials: int) -> list:
    """Run the plain loop for ``n_trials`` trials; returns [(params, metrics)] in trial order."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results: list = []
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=cfg.study.seed))
    study.optimize(make_objective(cfg, space, results), n_trials=n_trials)
    return results
