"""The compiled core, through the engine: equivalences, planted failures, metric definitions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import BASE
from conftest import train_trials as run

from pipeline.core.model import MLP, Structure
from pipeline.core.net import builtin_net
from pipeline.core.train import Hparams
from pipeline.core.unit_draws import make_unit_draws
from pipeline.engine import draws_for


def test_vmapped_batch_equals_each_trial_alone(tiny_cfg):
    cfg = tiny_cfg("model.depth=4", "train.seeds=2")
    variants = [
        {"init.weights": "he_normal", "init.gain": 1.0},
        {"init.weights": "glorot_uniform", "init.gain": 2.0, "train.learning_rate": 0.1},
        {
            "init.weights": "orthogonal",
            "init.gain": 0.7,
            "init.bias": "normal",
            "init.bias_std": 0.1,
        },
    ]
    together, engine = run(cfg, *variants)
    assert engine.stats.executables == 1  # one structure, one call
    weights = [v["init.weights"] for v in variants]
    for variant, batched in zip(variants, together):
        [alone], _ = run(cfg, variant, weights=weights)
        np.testing.assert_allclose(
            alone.curves["loss"][1], batched.curves["loss"][1], rtol=2e-4, atol=1e-5
        )
        assert alone.metrics["steps_to_target"] == batched.metrics["steps_to_target"]


def test_masked_depth_equals_the_real_shallower_network(tiny_cfg):
    variant = {"model.depth": 3, "init.weights": "he_normal"}
    [padded], e1 = run(tiny_cfg("engine.depth_buckets=[8]"), variant)
    [exact], e2 = run(tiny_cfg("engine.depth_buckets=[3]"), variant)
    assert e1.stats.padded_layer_steps > e2.stats.padded_layer_steps  # the first really padded
    np.testing.assert_allclose(
        padded.curves["loss"][1], exact.curves["loss"][1], rtol=2e-4, atol=1e-5
    )
    np.testing.assert_allclose(padded.layer_grad_norm_init, exact.layer_grad_norm_init, rtol=1e-4)
    assert len(exact.layer_grad_norm_init) == 4  # 3 hidden layers + the read-out


def test_planted_explosion_is_counted_and_stable_config_is_not(tiny_cfg):
    cfg = tiny_cfg("model.activation=relu", "model.width=64")
    boom, calm = run(
        cfg,
        {"model.depth": 16, "init.weights": "normal", "init.std": 1.0},
        {"model.depth": 4, "init.weights": "he_normal", "init.gain": 1.0},
    )[0]
    assert boom.metrics["explosion_count"] > 0
    assert calm.metrics["explosion_count"] == 0
    assert calm.metrics["diverged"] == 0


def test_nan_runs_complete_and_get_the_divergence_penalty(tiny_cfg):
    cfg = tiny_cfg("model.depth=8")
    [nan] = run(cfg, {"init.weights": "normal", "init.std": 50.0, "train.learning_rate": 10.0})[0]
    assert nan.metrics["diverged"] == 1.0
    assert nan.metrics["objective"] == 2 * cfg.train.steps + 2
    assert nan.metrics["explosion_count"] > 0
    assert not np.isfinite(nan.metrics["final_train_loss"])


def test_vanishing_is_counted(tiny_cfg):
    cfg = tiny_cfg("model.activation=sigmoid", "model.depth=16", "metrics.vanish_threshold=1e-4")
    vanish, fine = run(
        cfg,
        {"init.weights": "normal", "init.std": 0.01},
        {"init.weights": "glorot_normal", "model.depth": 2},
    )[0]
    assert vanish.metrics["vanishing_count"] == cfg.train.steps
    assert fine.metrics["vanishing_count"] == 0
    assert vanish.layer_grad_norm_init[0] < 1e-3 * vanish.layer_grad_norm_init[-1]


def test_steps_to_target_definition(tiny_cfg):
    easy = run(tiny_cfg("train.target_loss=100"), {})[0][0]
    assert easy.metrics["steps_to_target"] == 1  # reached at the very first step
    never = run(tiny_cfg("train.target_loss=1e-6"), {})[0][0]
    assert never.metrics["steps_to_target"] == never_sentinel(tiny_cfg())
    assert never.metrics["reached_target"] == 0
    assert never_sentinel(tiny_cfg()) < never.metrics["objective"] <= 2 * tiny_cfg().train.steps + 1


def never_sentinel(cfg):
    return cfg.train.steps + 1


def _trained_params(structure, draw, scale, bias_std, steps=30):
    """Params after `steps` SGD steps, through the core directly."""
    from pipeline.core.data import batch_schedule, gaussian
    from pipeline.core.train import Data, Settings

    ds = gaussian(4, 8, 256, 64, 4.0, 0)
    sched = batch_schedule(256, 32, steps, 1, 0)
    data = Data(*(jnp.asarray(a) for a in ds[:4]), jnp.asarray(sched))
    settings = Settings("sgd", 32, steps, 0.9, 0.7, 1e3, 1e-6)
    from pipeline.engine.run import batched_train

    net = builtin_net(structure)
    init_fn, chunk_fn = batched_train(net, settings)
    draws = ("constant", "normal")
    units = make_unit_draws(net, draws)(jax.random.key(0), 1)
    one = lambda v, dt=jnp.float32: jnp.asarray([v], dt)  # noqa: E731
    kernels, biases = len(net.layout.kernels), len(net.layout.biases)
    hp = Hparams(
        draw=jnp.full((1, kernels), draws.index(draw), jnp.int32),
        scale=jnp.full((1, kernels), scale, jnp.float32),
        bias_mean=jnp.zeros((1, biases)),
        bias_std=jnp.full((1, biases), bias_std),
        other_scale=jnp.zeros((1, 0)),
        gain=one(1.0),
        clip_norm=one(jnp.inf),
        lsuv=one(False, bool),
        depth=one(structure.n_hidden, jnp.int32),
        seed=one(0, jnp.int32),
        values={
            "train.learning_rate": one(0.1),
            "train.momentum": one(0.0),
            "train.weight_decay": one(0.0),
            "model.dropout": one(0.0),
            "model.negative_slope": one(0.01),
        },
    )
    state = init_fn(hp, units, data)
    state, _ = chunk_fn(state, hp, jnp.ones((1,), bool), data)
    return jax.tree.map(lambda a: np.asarray(a[0]), state.params)


def test_zero_init_never_breaks_symmetry_but_zero_biases_alone_do_not_matter():
    s = Structure("tanh", 3, 8, 8, 4)
    # Constant weights (the seed article's zero/constant init): every hidden unit of a layer
    # gets the same gradient, so after training all columns of a hidden kernel are still equal.
    sym = _trained_params(s, "constant", 0.1, 0.0)
    for kernel in (sym["input"]["kernel"], *sym["hidden"]["dense"]["kernel"]):
        np.testing.assert_allclose(
            kernel, kernel[:, :1].repeat(kernel.shape[1], 1), rtol=1e-5, atol=1e-6
        )
    # Random weights with zero biases: units differ from the start and stay different.
    rnd = _trained_params(s, "normal", 0.3, 0.0)
    k = rnd["hidden"]["dense"]["kernel"][0]
    assert np.abs(k - k[:, :1]).max() > 1e-2


def test_params_have_the_flax_model_layout():
    s = Structure("relu", 4, 8, 5, 3)
    flax_params = MLP(s).init(jax.random.key(0), jnp.ones((2, 5)), jnp.int32(4), jnp.float32(0.0))[
        "params"
    ]
    net = builtin_net(s)
    units = make_unit_draws(net, ("normal",))(jax.random.key(0), 1)
    from pipeline.core.train import init_params

    values = ([0] * 3, [1.0] * 3, [0.0] * 3, [0.0] * 3, [], 1.0, jnp.inf, False, 4, 0)
    hp = Hparams(*(jnp.asarray(v) for v in values), values={})
    ours = init_params(units, hp, net.layout)
    assert jax.tree.structure(ours) == jax.tree.structure(flax_params)
    assert jax.tree.map(jnp.shape, ours) == jax.tree.map(jnp.shape, flax_params)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_unit_draws_compile_no_custom_call_and_orthogonal_ones_are_orthonormal(kind):
    # A batched QR inside an XLA CPU executable runs as a LAPACK custom call that wedged
    # `train ... init.weights=orthogonal train.seeds=5` in 4 of 5 cold runs: the compiled
    # sampler draws Gaussians only and the QR happens on the host.
    from pipeline.core.initializers import DRAWS

    n_in = 25 if kind == "cnn" else 5  # 5x5 images
    sampler = make_unit_draws(builtin_net(Structure("relu", 6, 8, n_in, 3, kind)), DRAWS)
    hlo = sampler.hlo(jax.random.key(0), 3)
    assert "custom_call" not in hlo and "qr" not in hlo.lower()
    units = sampler(jax.random.key(0), 3)
    hidden = units["hidden/dense/kernel"]
    assert hidden.shape[:3] == (3, len(DRAWS), 5)  # seeds, draws, layers
    for leaf in sampler.layout.kernels:
        ortho = units[leaf.path][:, DRAWS.index("orthogonal")]
        kernel = leaf.fan_shape
        for w in ortho.reshape(-1, int(np.prod(kernel[:-1])), kernel[-1]):
            gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
            np.testing.assert_allclose(gram, np.eye(len(gram)), atol=1e-5)
    delta = hidden[:, DRAWS.index("delta_orthogonal")]
    if kind == "cnn":  # zeros but the centre tap, which is orthogonal
        centre = delta[..., 1, 1, :, :]
        assert np.abs(delta).sum() == pytest.approx(np.abs(centre).sum())
        np.testing.assert_allclose(
            np.einsum("...ij,...ik->...jk", centre, centre),
            np.broadcast_to(np.eye(8), (3, 5, 8, 8)),
            atol=1e-5,
        )


def test_stall_bound_follows_measured_calls(tiny_cfg):
    from pipeline.config import Space, TrialSpec
    from pipeline.engine import STALL_FIRST_S, STALL_FLOOR_S, Engine
    from pipeline.engine.datasets import load_dataset

    cfg = tiny_cfg("model.depth=2")
    engine = Engine(cfg, load_dataset(cfg.data), Space())
    trial = TrialSpec.of_config(cfg)
    [call] = engine.plan([trial])
    assert engine.stall_limit(call) == STALL_FIRST_S  # nothing measured yet
    engine.run([trial])
    assert engine.stall_limit(call) == STALL_FLOOR_S  # a tiny call: the floor
    fixed = tiny_cfg("model.depth=2", "engine.stall_timeout_s=7.5")
    assert Engine(fixed, load_dataset(fixed.data), Space()).stall_limit(call) == 7.5


def test_draws_are_only_those_the_space_needs():
    assert draws_for(["he_normal", "glorot_normal"]) == ("normal",)
    assert draws_for(["orthogonal", "zeros", "uniform"]) == ("constant", "uniform", "orthogonal")


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_every_optimizer_trains(tiny_cfg, optimizer):
    lr = 0.01 if optimizer == "adam" else 0.05
    [r] = run(
        tiny_cfg(f"train.optimizer={optimizer}", f"train.learning_rate={lr}", "model.depth=2"), {}
    )[0]
    assert r.metrics["final_train_loss"] < r.metrics["initial_train_loss"]


def test_a_loss_from_exploded_logits_never_reaches_the_target(tiny_cfg):
    # Constant weights 5.0 in a 6-layer ReLU net: logits ~1e12, where float32 log-softmax
    # rounds the loss of some samples to 0: the first loss reads 1.40 (chance is 2.30).
    cfg = tiny_cfg("model.activation=relu", "model.depth=6", "train.target_loss=1.5")
    [r] = run(cfg, {"init.weights": "constant", "init.value": 5.0})[0]
    assert r.metrics["explosion_count"] >= 1
    assert r.metrics["steps_to_target"] == cfg.train.steps + 1


def _unit_draws_before_the_model_interface(structure, draws, key, n_seeds):
    """The random numbers of the unit sampler before the model interface (commit 1f2c9f9): one
    key split four ways per seed (input, hidden, output, biases), the biases of the input and
    hidden layers drawn as one array. Mapped onto today's parameter paths."""
    from pipeline.core.initializers import finish_draw, raw_draw
    from pipeline.core.model import layer_shapes

    kernels = layer_shapes(structure)

    def per_seed(k):
        k_in, k_hidden, k_out, k_bias = jax.random.split(k, 4)

        def stacked(kk, shape):
            return jnp.stack([raw_draw(d, kk, shape) for d in draws])

        bias = jax.random.normal(k_bias, (structure.n_hidden, structure.width))
        units = {
            "input/kernel": stacked(k_in, kernels["input"]),
            "output/kernel": stacked(k_out, kernels["output"]),
            "input/bias": bias[0],
            "hidden/dense/bias": bias[1:],
            "output/bias": jax.random.normal(jax.random.fold_in(k_bias, 1), (structure.n_classes,)),
        }
        layer_keys = jax.vmap(lambda i: jax.random.fold_in(k_hidden, i))(
            jnp.arange(structure.n_hidden - 1)
        )
        units["hidden/dense/kernel"] = jax.vmap(
            lambda kk: stacked(kk, kernels["hidden"]), out_axes=1
        )(layer_keys)
        return units

    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n_seeds))
    units = jax.device_get(jax.vmap(per_seed)(keys))
    for path, rank in (("input/kernel", 2), ("hidden/dense/kernel", 2), ("output/kernel", 2)):
        rank = len(kernels[path.split("/")[0]])
        a = np.asarray(units[path])
        units[path] = np.stack(
            [finish_draw(d, a[:, i], rank) for i, d in enumerate(draws)], axis=1
        ).astype(np.float32)
    return units


def test_builtins_through_the_model_interface_train_as_before():
    """The MLP and CNN through today's generic per-leaf init give the metrics the engine gave
    before the model interface, given the same random numbers (the unit draws are now keyed per
    parameter path, so a seed's draw changed by design; tests/engine/data says where the numbers
    come from)."""
    import json
    from pathlib import Path

    from pipeline.config import Space, TrialSpec, load_config
    from pipeline.engine import Engine
    from pipeline.engine.datasets import load_dataset

    golden = json.loads(
        (Path(__file__).parent / "data/builtin_before_model_interface.json").read_text()
    )
    for name, case in golden["cases"].items():
        cfg = load_config([*BASE, *golden["tiny"], *case["args"]])
        engine = Engine(cfg, load_dataset(cfg.data), Space())
        trial = TrialSpec.of_config(cfg)
        structure = engine.structure_of(trial)
        units = _unit_draws_before_the_model_interface(
            structure, engine.draws, engine.key, cfg.train.seeds
        )
        layout = engine.net(structure).layout
        engine._unit_values[layout] = jax.device_put(units, engine.replicated)
        [result] = engine.run([trial])
        np.testing.assert_allclose(result.curves["loss"][1], case["loss"], rtol=1e-4, atol=1e-5)
        assert result.metrics["steps_to_target"] == case["steps_to_target"], name
        for key in ("final_train_loss", "final_val_loss", "initial_train_loss"):
            assert result.metrics[key] == pytest.approx(case[key], rel=1e-4), (name, key)
