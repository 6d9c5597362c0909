"""The plain loops `make bench` times measure what the engine measures."""

from __future__ import annotations

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import TINY

from benchmarks import baseline, residual_loop
from benchmarks.baseline import steps_to_target
from pipeline.config import TrialSpec, load_config
from pipeline.core.metrics import start_running, update_running
from pipeline.core.theory import residual_scales
from pipeline.core.train import init_params
from pipeline.engine.rows import row_hparams


def engine_steps_to_target(losses, norms, cfg) -> float:
    """The engine's rule, run as the compiled call runs it (metrics.update_running in a scan)."""

    m = cfg.metrics
    settings = SimpleNamespace(
        smoothing=m.smoothing,
        explode_threshold=m.explode_threshold,
        vanish_threshold=m.vanish_threshold,
        target_loss=cfg.train.target_loss,
    )

    def scan(r, xs):
        i, loss, norm = xs
        return update_running(r, i, loss, norm, jnp.float32(1.0), settings), None

    xs = (jnp.arange(len(losses)), jnp.asarray(losses, jnp.float32), jnp.asarray(norms))
    r, _ = jax.lax.scan(scan, start_running(), xs)
    hit = int(r.hit_step)
    return float(hit + 1) if hit >= 0 else float(cfg.train.steps + 1)


@pytest.mark.parametrize("seed", range(6))
def test_the_baselines_steps_to_target_is_the_engines(seed):
    cfg = load_config(["train.steps=100", "train.eval_every_steps=50", "train.target_loss=1.0"])
    rng = np.random.default_rng(seed)
    losses = np.linspace(2.5, 0.2, 100) + rng.normal(0, 0.3, 100)
    norms = rng.lognormal(1, 1, 100)
    # Planted explosions: huge or non-finite gradient norms, some with a misleading tiny loss.
    exploded = rng.choice(100, 15, replace=False)
    norms[exploded] = rng.choice([np.inf, np.nan, 5e3, 1e9], 15)
    losses[exploded[:5]] = 0.0
    want = engine_steps_to_target(losses, norms, cfg)
    assert steps_to_target(losses.astype(np.float32), norms, cfg) == want
    if seed == 0:  # a case that never gets there: the sentinel steps + 1
        assert (
            steps_to_target(losses + 10, norms, cfg)
            == 101.0
            == engine_steps_to_target(losses + 10, norms, cfg)
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    "module",
    [
        "benchmarks.baseline",
        "benchmarks.independent_loop",
        "benchmarks.custom_loop",
    ],
)
def test_each_plain_loop_runs_as_the_bench_runs_it(tmp_path, module):
    """A whole process from another folder, as `make bench` starts it (repo root on the path)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "out.json"
    tiny = ["study.n_trials=2", "train.steps=20", "train.eval_every_steps=20", "model.width=8"]
    env = {**os.environ, "PYTHONPATH": str(root)}
    if module == "benchmarks.custom_loop":  # the example's module on the example's data
        from examples.make_data import main as make_data

        make_data(str(tmp_path / "bc.npz"))
        tiny += [f"data.path={tmp_path / 'bc.npz'}", "train.batch_size=32"]
    cmd = [sys.executable, "-m", module, "--out", str(out), *tiny, f"runs_dir={tmp_path}"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    document = json.loads(out.read_text())
    assert len(document["steps_to_target"]) == 2 and len(document["params"]) == 2
    assert all(1 <= s <= 21 for s in document["steps_to_target"])


# The residual workload's loop (benchmarks.residual_loop): one case per rule, both norms.
RESIDUAL_CASES = [("none", "none"), ("scaled", "pre"), ("fixup", "none"), ("rezero", "pre")]


def test_the_residual_loop_trains_what_the_engine_trains(train):
    """From the engine's own initial parameters, the plain residual model with optax.sgd on the
    sliced mini-batches gives the engine's loss and gradient norm at every step and its steps to
    target (no norm: nothing rescales a wrong alpha, gate or zero layer away); with pre-norm the
    two networks give the same logits from the same parameters (the norm's placement)."""
    tiny = [*TINY, "train.steps=20", "train.eval_every_steps=20", "metrics.diagnostics=false"]
    target = ["train.target_loss=2.5", "metrics.smoothing=0.5"]  # reached within 20 steps
    cfg = load_config([*tiny, *target, "model.kind=resmlp", "model.depth=4"])
    rules = ("fixup", "rezero")  # the two that start at the identity: a zero layer, a gate
    results, engine = train(cfg, *({"init.residual": r} for r in rules))
    ds, x_batches, y_batches = baseline.sliced_batches(cfg)
    reached = 0
    for rule, result in zip(rules, results, strict=True):
        trial = TrialSpec.of_config(cfg).with_values({"init.residual": rule})
        structure = engine.structure_of(trial)
        assert structure.n_hidden == 4  # no padded blocks: the two trees line up one to one
        net = engine.net(structure)
        units = engine._unit_draws(structure)  # what this engine drew (cached on it)
        hp = row_hparams(trial, net.layout, structure, engine.draws, 0)
        params = jax.device_get(init_params(units, hp, net.layout))
        if rule not in residual_loop.GATED:
            del params["blocks"]["gate"]  # the engine's gate is unused: alpha is a constant
        model = residual_loop.make_model(trial.flat(), ds.n_classes)
        logits = lambda params, x, model=model: model.apply({"params": params}, x)  # noqa: E731
        tx = optax.sgd(trial["train.learning_rate"])
        losses, norms = baseline.train(logits, tx, params, x_batches, y_batches, 20)
        np.testing.assert_allclose(losses, result.curves["loss"][1], rtol=2e-4, err_msg=rule)
        np.testing.assert_allclose(norms, result.curves["grad_norm"][1], rtol=2e-3, err_msg=rule)
        steps_to = baseline.steps_to_target(losses, norms, cfg)
        assert steps_to == result.metrics["steps_to_target"], rule
        reached += steps_to <= 20
    assert reached >= 1  # the steps to target compared are not only the sentinel

    x = jnp.asarray(ds.x_val[:32])
    for rule, norm in (("none", "none"), ("scaled", "pre"), ("rezero", "pre")):
        trial = TrialSpec.of_config(cfg).with_values({"init.residual": rule, "model.norm": norm})
        structure = engine.structure_of(trial)
        net = engine.net(structure)
        hp = row_hparams(trial, net.layout, structure, engine.draws, 0)
        params = jax.device_get(net.own(jax.random.key(1)))  # any parameters will do
        params["blocks"]["gate"] = np.full(4, 0.7 if rule == "rezero" else 0.0, np.float32)
        want = net.apply(params, x, hp)
        if rule not in residual_loop.GATED:
            del params["blocks"]["gate"]
        got = residual_loop.make_model(trial.flat(), ds.n_classes).apply({"params": params}, x)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=f"{rule} {norm}")


def test_the_residual_loop_runs_its_workload_as_the_bench_runs_it(tmp_path):
    """``python -m benchmarks.residual_loop``'s main, in this process: the workload's overrides
    on the bench preset, Optuna's trials, one steps-to-target per trial in ``--out``."""
    import json

    out = tmp_path / "out.json"
    tiny = ["study.n_trials=1", "train.steps=20", "train.eval_every_steps=20", "model.width=8"]
    argv = [*residual_loop.WORKLOAD, "--out", str(out), *tiny, f"runs_dir={tmp_path}"]
    assert baseline.main(argv, residual_loop.make_objective) == 0
    document = json.loads(out.read_text())
    [params] = document["params"]  # what Optuna sampled: the workload's four dimensions
    assert set(params) == {"model.depth", "model.norm", "init.residual", "init.gain"}
    assert 0.5 <= params["init.gain"] <= 2.0 and params["model.depth"] in (4, 16, 64)
    assert len(document["steps_to_target"]) == 1 and 1 <= document["steps_to_target"][0] <= 21


@pytest.mark.parametrize(("rule", "norm"), RESIDUAL_CASES)
def test_the_residual_loop_initializes_each_rule(rule, norm):
    """The loop's own draw (what the bench trains): each branch layer's std is He's times the
    rule's factor (theory.residual_scales), Fixup's last layer 0, the gate only where learnable."""
    width, depth, gain = 64, 4, 1.3
    p = {"model.depth": depth, "model.width": width, "model.norm": norm, "init.residual": rule,
         "init.weights": "he_normal", "init.gain": gain, "init.mode": "fan_in", "init.std": 0.01,
         "init.limit": 0.05, "init.value": 0.0, "init.bias": "zeros", "init.bias_value": 0.0,
         "init.bias_std": 0.0}  # fmt: skip
    model = residual_loop.make_model(p, 10)
    params = model.init(jax.random.key(0), jnp.ones((1, 32)))["params"]
    blocks = params["blocks"]
    scales = residual_scales(rule, depth)
    he = gain * np.sqrt(2.0 / width)
    for layer, factor in (("fc1", scales.w1_var), ("fc2", scales.w2_var)):
        kernel = np.asarray(blocks[layer]["kernel"])
        assert kernel.shape == (depth, width, width)
        if factor == 0.0:
            assert not kernel.any(), layer
        else:  # 4 x 64 x 64 draws: the std's standard error is 0.6%
            assert abs(kernel.std() / (he * np.sqrt(factor)) - 1) < 0.03, layer
    assert ("gate" in blocks) == (rule in residual_loop.GATED)
    if "gate" in blocks:
        assert not np.asarray(blocks["gate"]).any()
    assert ("norm" in blocks) == (norm == "pre")
