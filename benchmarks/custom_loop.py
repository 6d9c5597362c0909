"""The plain per-trial loop over a user's own module: what ``make bench ARGS=--custom`` times the
sweep of ``conf/experiment/your_model.yaml`` against.

Written as a user of Flax NNX and Optax would: per trial, build the module with the factory,
initialize it with the trial's initializer and rules in one call (``pipeline.init_params``, what
the best file offers), split it into graph and parameters, and train it with a jitted step, one
step per call. Same trials (Optuna's seeded random sampler over the same space), same data and
mini-batch order as the sweep.

    python -m benchmarks.custom_loop [--out results.json] [--cached] key=value ...
"""

from __future__ import annotations

import importlib
import sys

import optax
import optuna
from flax import nnx

import pipeline
from benchmarks import baseline
from pipeline.config import RUN_SECTIONS, TrialSpec, to_flat_dict
from pipeline.search.samplers import suggest


def make_objective(cfg, space, results: list):
    ds, x_batches, y_batches = baseline.sliced_batches(cfg)
    steps = cfg.train.steps
    module_name, name = cfg.model.factory.split(":")
    make_model = getattr(importlib.import_module(module_name), name)
    base = to_flat_dict(cfg, RUN_SECTIONS)

    def objective(trial: optuna.Trial) -> float:
        p = {**base, **suggest(trial, space)}
        spec = TrialSpec.from_flat(p)
        model = make_model(
            depth=p["model.depth"], width=p["model.width"], activation=p["model.activation"],
            n_features=ds.n_features, n_classes=ds.n_classes,
        )  # fmt: skip
        entry = {**spec.nested(), "structure": {"n_features": ds.n_features}}
        key = baseline.trial_key(cfg, trial)
        pipeline.init_params(entry, model, key, x_batches[0, :1])  # updates the module
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        tx = optax.sgd(p["train.learning_rate"])
        logits = lambda params, x: nnx.merge(graphdef, params, rest)(x, train=True)  # noqa: E731
        losses = baseline.train(logits, tx, params, x_batches, y_batches, steps)
        metrics = {"steps_to_target": baseline.steps_to_target(*losses, cfg)}
        results.append((trial.params, metrics))
        return metrics["steps_to_target"]

    return objective


if __name__ == "__main__":
    sys.exit(baseline.main(["--experiment", "your_model", *sys.argv[1:]], make_objective))
