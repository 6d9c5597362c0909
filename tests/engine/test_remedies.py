"""LSUV, dropout and weight decay inside the compiled call: definitions and equivalences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pipeline.core.initializers import make_initializer
from pipeline.core.lsuv import TOL, lsuv
from pipeline.core.model import MLP, Structure


def test_lsuv_gives_every_real_layer_unit_variance_on_its_batch():
    s = Structure("tanh", 6, 32, 10, 4)
    x = jax.random.normal(jax.random.key(1), (128, 10)) * 3.0
    params = MLP(s).init(jax.random.key(0), x, jnp.int32(6), jnp.float32(0.0))["params"]
    params = jax.tree.map(lambda a: a + 0.05 if a.ndim == 1 else a, params)  # non-zero biases
    depth = jnp.int32(4)  # layers 5 and 6 of the stack are masked and must stay as they were
    out = lsuv(params, x, depth, jnp.float32(0.0), "tanh", jnp.float32(1.0))
    h = x
    layers = [out["input"]] + [
        jax.tree.map(lambda a, i=i: a[i], out["hidden"]["dense"]) for i in range(3)
    ]
    for layer in [*layers, None]:
        layer = layer or out["output"]
        pre = h @ layer["kernel"] + layer["bias"]
        assert abs(float(jnp.var(pre)) - 1.0) <= TOL
        h = jnp.tanh(pre)
    masked = params["hidden"]["dense"]["kernel"][3:]
    np.testing.assert_array_equal(out["hidden"]["dense"]["kernel"][3:], masked)


def test_lsuv_trial_starts_normalized_and_trains(tiny_cfg, train):
    cfg = tiny_cfg("model.activation=tanh", "model.depth=8", "model.width=64")
    lsuv_trial, tiny = train(
        cfg,
        {"init.weights": "lsuv"},
        {"init.weights": "normal", "init.std": 0.01},  # a tiny start LSUV would have rescued
    )[0]
    q = lsuv_trial.diagnostics["pre_q"][0]  # on the probe batch, not the one LSUV saw
    assert np.all((q > 0.6) & (q < 1.6)), q
    assert tiny.diagnostics["pre_q"][0][-1] < 1e-6
    assert lsuv_trial.metrics["final_train_loss"] < 0.8 * lsuv_trial.metrics["initial_train_loss"]
    with pytest.raises(ValueError, match="data-dependent"):
        make_initializer("lsuv", 1.0)


def test_dropout_rate_zero_is_exactly_no_dropout_and_a_positive_rate_is_not(tiny_cfg, train):
    cfg = tiny_cfg("model.depth=3")
    [plain], _ = train(cfg, {})
    # A call compiled with dropout (the second row needs it) leaves a rate-0 row untouched.
    zero, half = train(cfg, {"model.dropout": 0.0}, {"model.dropout": 0.5})[0]
    np.testing.assert_allclose(zero.curves["loss"][1], plain.curves["loss"][1], rtol=1e-5)
    assert not np.allclose(half.curves["loss"][1], plain.curves["loss"][1], rtol=1e-3)
    [again], _ = train(cfg, {"model.dropout": 0.5})
    np.testing.assert_array_equal(again.curves["loss"][1], half.curves["loss"][1])  # seeded
    assert half.metrics["final_train_loss"] < half.metrics["initial_train_loss"]


def test_weight_decay_shrinks_the_weights(tiny_cfg, train):
    cfg = tiny_cfg("model.depth=3", "train.learning_rate=0.1")
    free, decayed = train(cfg, {}, {"train.weight_decay": 0.5})[0]
    start = free.diagnostics["weight_norm"][0]
    np.testing.assert_allclose(decayed.diagnostics["weight_norm"][0], start, rtol=1e-6)
    # 60 steps of w -= 0.1 * (grad + 0.5 w): without the gradient, w shrinks by 0.95^60 = 0.05.
    assert np.all(
        decayed.diagnostics["weight_norm"][-1] < 0.5 * free.diagnostics["weight_norm"][-1]
    )
