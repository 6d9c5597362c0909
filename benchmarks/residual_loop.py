"""The plain per-trial loop over the residual workload: what ``make bench`` times the sweep of
residual MLPs against (``python -m benchmarks.bench --workload residual``).

A residual MLP written as a careful Flax user would, from the papers' rules: an input layer and
LayerNorm, ``depth`` blocks ``u = x + alpha * W2 relu(W1 N(x))`` (N = LayerNorm for pre-norm,
nothing without a norm), a dense read-out. The blocks are one ``nn.scan`` over the trial's own
depth, so a trial's compile time does not grow with its depth (a Python loop over the blocks
would compile 64 copies of a block: a slower baseline, not a fairer one). Each trial's rule sets
the constants of ``pipeline.core.theory.residual_scales`` (the single place they live): alpha =
1/sqrt(L) for ``scaled``; W1 x L^(-1/2) and W2 = 0 for ``fixup``; a learnable gate at 0 in place
of alpha for ``rezero``. Initializers come from ``make_initializer`` (what a user gets from
``load_initializer``), the optimizer is ``optax.sgd``, and the training loop, data, mini-batch
order and steps-to-target rule are ``benchmarks.baseline``'s: the same trials (Optuna's seeded
random sampler over the same space), one jitted step per call, the losses to the host once per
trial.

    python -m benchmarks.residual_loop [--cached] [--out results.json] key=value ...
"""

from __future__ import annotations

import sys

import flax.linen as nn
import optax
import optuna

from benchmarks import baseline
from pipeline.core.initializers import make_bias_initializer, make_initializer, resolve_gain
from pipeline.core.theory import residual_scales
from pipeline.search.samplers import suggest

# The residual workload on top of the `bench` preset (its data, width, SGD, steps, sampler):
# depths {4, 16, 64}, no norm or pre-norm, four residual rules, He at a log-uniform gain.
WORKLOAD = [
    "model.kind=resmlp",
    "space.model.activation=relu",
    "space.model.depth=[4, 16, 64]",
    "space.model.norm=[none, pre]",
    "space.init.residual=[none, scaled, fixup, rezero]",
    "space.init.weights=he_normal",
    "space.init.gain={low: 0.5, high: 2.0, log: true}",
    "study.name=bench_residual",
]
GATED = ("skipinit", "rezero")  # alpha is a learnable scalar per block, 0 at init


class Block(nn.Module):
    """One residual block; the carry is the stream. Names match the sweep's model
    (``blocks/fc1``, ``blocks/fc2``, ``blocks/norm``, ``blocks/gate``)."""

    width: int
    norm: str
    alpha: float
    gated: bool
    w1_init: object
    w2_init: object
    bias_init: object

    @nn.compact
    def __call__(self, x, _):
        h = nn.LayerNorm(name="norm")(x) if self.norm == "pre" else x
        h = nn.relu(nn.Dense(self.width, kernel_init=self.w1_init, bias_init=self.bias_init,
                             name="fc1")(h))  # fmt: skip
        branch = nn.Dense(self.width, kernel_init=self.w2_init, bias_init=self.bias_init,
                          name="fc2")(h)  # fmt: skip
        alpha = self.param("gate", nn.initializers.zeros, ()) if self.gated else self.alpha
        return x + alpha * branch, None


class PlainResMLP(nn.Module):
    depth: int
    width: int
    n_classes: int
    norm: str
    alpha: float
    gated: bool
    kernel_init: object
    w1_init: object
    w2_init: object
    bias_init: object

    @nn.compact
    def __call__(self, x):
        dense = dict(kernel_init=self.kernel_init, bias_init=self.bias_init)
        x = nn.LayerNorm(name="input_norm")(nn.relu(nn.Dense(self.width, name="input", **dense)(x)))
        blocks = nn.scan(
            Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=self.depth
        )
        x, _ = blocks(
            self.width, self.norm, self.alpha, self.gated, self.w1_init, self.w2_init,
            self.bias_init, name="blocks",
        )(x, None)  # fmt: skip
        return nn.Dense(self.n_classes, name="output", **dense)(x)


def make_model(p: dict, n_classes: int) -> PlainResMLP:
    """The residual MLP of one trial's values ``p`` (dotted keys), its rule applied."""
    depth = p["model.depth"]
    rule = residual_scales(p["init.residual"], depth)
    gain = resolve_gain(p["init.weights"], p["init.gain"], "relu", 0.01)
    init_params = {k: p[f"init.{k}"] for k in ("mode", "std", "limit", "value")}

    def kernel(variance_factor: float):
        if variance_factor == 0.0:  # Fixup's last layer of each branch
            return nn.initializers.zeros
        return make_initializer(p["init.weights"], gain * variance_factor**0.5, init_params)

    return PlainResMLP(
        depth=depth,
        width=p["model.width"],
        n_classes=n_classes,
        norm=p["model.norm"],
        alpha=rule.alpha,
        gated=p["init.residual"] in GATED,
        kernel_init=kernel(1.0),
        w1_init=kernel(rule.w1_var),
        w2_init=kernel(rule.w2_var),
        bias_init=make_bias_initializer(p["init.bias"], p["init.bias_value"], p["init.bias_std"]),
    )


def make_objective(cfg, space, results: list):
    ds, x_batches, y_batches = baseline.sliced_batches(cfg)
    steps = cfg.train.steps

    def objective(trial: optuna.Trial) -> float:
        p = {**baseline._base(cfg), **suggest(trial, space)}
        model = make_model(p, ds.n_classes)
        key = baseline.trial_key(cfg, trial)
        params = model.init(key, x_batches[0, :1])["params"]
        tx = optax.sgd(p["train.learning_rate"])
        logits = lambda params, x: model.apply({"params": params}, x)  # noqa: E731
        losses = baseline.train(logits, tx, params, x_batches, y_batches, steps)
        metrics = {"steps_to_target": baseline.steps_to_target(*losses, cfg)}
        results.append((trial.params, metrics))
        return metrics["steps_to_target"]

    return objective


if __name__ == "__main__":
    sys.exit(baseline.main([*WORKLOAD, *sys.argv[1:]], make_objective))
