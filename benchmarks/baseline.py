"""The plain per-trial loop ``make bench`` compares against, written as a careful user would.

Optuna's ``study.optimize`` calls an objective that builds a Flax model, initializes it with the
trial's initializer, defines a jitted train step and runs a Python loop over steps. It trains the
same data, schedule and configurations as the engine and computes what its objective needs,
steps to target, and nothing else: the mini-batches are sliced once up front, each step returns
only its loss (kept on the device), and the losses come to the host once per trial. In-memory
Optuna storage, no MLflow.

    python -m benchmarks.baseline [--cached] [--out results.json] key=value ...

runs it as a whole process, as a user would (``--cached``: JAX's persistent compilation cache
and the XLA flags the engine sets, the stronger baseline).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import optuna

import pipeline
from pipeline.core.activations import ACTIVATIONS
from pipeline.core.data import batch_schedule
from pipeline.core.initializers import make_bias_initializer, make_initializer, resolve_gain
from pipeline.engine.datasets import load_dataset
from pipeline.search import grid as grids
from pipeline.search.samplers import suggest


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


def sliced_batches(cfg):
    """The engine's mini-batch schedule (seed 0), gathered once: ``x[steps, batch, features]``."""
    ds = load_dataset(cfg.data)
    steps = cfg.train.steps
    schedule = batch_schedule(len(ds.y_train), cfg.train.batch_size, steps, 1, cfg.train.seed)[0]
    return ds, jnp.asarray(ds.x_train[schedule]), jnp.asarray(ds.y_train[schedule])


def make_objective(cfg, space, results: list):
    """An Optuna objective training one trial per call; appends (params, metrics) to results."""
    ds, x_batches, y_batches = sliced_batches(cfg)
    steps = cfg.train.steps

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
        params = model.init(trial_key(cfg, trial), x_batches[0, :1])
        params = params["params"]
        tx = optax.sgd(p["train.learning_rate"])
        logits = lambda params, x: model.apply({"params": params}, x)  # noqa: E731
        losses = train(logits, tx, params, x_batches, y_batches, steps)
        metrics = {"steps_to_target": steps_to_target(*losses, cfg)}
        results.append((trial.params, metrics))
        return metrics["steps_to_target"]

    return objective


def trial_key(cfg, trial: optuna.Trial) -> jax.Array:
    """The key a trial's parameters are drawn with: under ``study.design=grid`` every trial
    shares ``train.seed`` (common seeds, as the engine's rows do); otherwise one key per trial."""
    common = cfg.study.design == "grid"
    return jax.random.key(cfg.train.seed + (0 if common else trial.number))


def train(logits, tx, params, x_batches, y_batches, steps: int) -> np.ndarray:
    """``steps`` optimizer steps of one trial, one jitted step per call; returns each step's
    loss and gradient norm ``[2, steps]`` (the engine's explosion rule needs the norm)."""

    @jax.jit
    def train_step(params, opt_state, losses, step, x, y):
        def loss_fn(params):
            return optax.softmax_cross_entropy_with_integer_labels(logits(params, x), y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        losses = losses.at[:, step].set(jnp.stack([loss, optax.tree.norm(grads)]))
        return optax.apply_updates(params, updates), opt_state, losses

    opt_state, losses = tx.init(params), jnp.zeros((2, steps))
    for step in range(steps):
        params, opt_state, losses = train_step(
            params, opt_state, losses, step, x_batches[step], y_batches[step]
        )
    return np.asarray(losses)


def _base(cfg) -> dict:
    from pipeline.config import to_flat_dict

    return to_flat_dict(cfg, ("model", "init", "train"))


def steps_to_target(losses: np.ndarray, grad_norms: np.ndarray, cfg) -> float:
    """The first step whose smoothed loss reaches the target, as the engine defines it
    (``pipeline.core.metrics.update_running``: an EMA of the mini-batch losses that leaves out
    the steps whose gradient global norm is NaN, Inf or above ``metrics.explode_threshold``)."""
    beta, ema = cfg.metrics.smoothing, np.nan
    for i, (loss, norm) in enumerate(zip(losses, grad_norms, strict=True)):
        if np.isfinite(norm) and norm <= cfg.metrics.explode_threshold:
            ema = loss if np.isnan(ema) else beta * ema + (1 - beta) * loss
        if ema <= cfg.train.target_loss:
            return float(i + 1)
    return float(cfg.train.steps + 1)


def run_loop(
    cfg, space, n_trials: int, objective_factory=make_objective, ends: list | None = None
) -> list:
    """Run a per-trial loop for ``n_trials`` trials; returns [(params, metrics)] in order (and
    appends each trial's end time to ``ends``). Under ``study.design=grid`` the trials are the
    grid's points (each with its learning rate), enqueued as the sweep plans them, in the same
    order; the loop does not extend the grid."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results: list = []
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=cfg.study.seed))
    if cfg.study.design == "grid":
        grids.plan(study, cfg, space)
        n_trials = min(n_trials, grids.waiting(study))
        space = grids.search_space(cfg, space)
    callbacks = [lambda *_: ends.append(time.time())] if ends is not None else None
    study.optimize(objective_factory(cfg, space, results), n_trials=n_trials, callbacks=callbacks)
    return results


def main(argv: list[str] | None = None, objective_factory=make_objective) -> int:
    """The loop as a whole process: ``--out`` gets its trials, metrics and phase times."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.baseline", description=__doc__)
    p.add_argument("--cached", action="store_true", help="persistent cache and the engine's flags")
    p.add_argument("--out", help="write the trials, metrics and phases here (JSON)")
    p.add_argument("--experiment", default="bench", help="the preset whose trials it trains")
    args, overrides = p.parse_known_args(argv)
    from pipeline.config import Space, load_config
    from pipeline.engine.devices import cache_dir, configure_cpu, use_compilation_cache

    cfg = load_config(overrides, args.experiment)
    if args.cached:  # one device (a loop trains one trial at a time), the engine's XLA flags
        configure_cpu(1)
        use_compilation_cache(cache_dir(cfg))
    compiled = [0.0]

    def on_event(event: str, duration: float, **_) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compiled[0] += duration

    jax.monitoring.register_event_duration_secs_listener(on_event)
    imports = time.time()
    ends: list[float] = []
    results = run_loop(cfg, Space.parse(cfg.space), cfg.study.n_trials, objective_factory, ends)
    if args.out:
        phases = {"started": pipeline.STARTED, "imports": imports, "trained": time.time()}
        document = {
            "phases": phases,
            "compile_s": compiled[0],
            "trial_ends": ends,
            "params": [r[0] for r in results],
            "steps_to_target": [r[1]["steps_to_target"] for r in results],
        }
        with open(args.out, "w") as f:
            json.dump(document, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
