"""The CNN family on digits: receptive-field fans, delta-orthogonal kernels, masked depth."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pipeline.config import ConfigError, load_config
from pipeline.core import predict
from pipeline.core.initializers import compute_fans, expected_std, make_initializer
from pipeline.core.model import KERNEL, PatchConv

CNN = ["data.name=digits", "model.kind=cnn", "model.width=8", "train.batch_size=64"]


@pytest.mark.parametrize(
    "lead, side, c_in, c_out", [((), 5, 1, 4), ((3,), 8, 4, 6), ((2, 2), 6, 3, 3)]
)
def test_patch_convolution_is_flax_conv_in_parameters_values_and_gradients(lead, side, c_in, c_out):
    x = jax.random.normal(jax.random.key(0), (*lead, side, side, c_in))
    conv = nn.Conv(c_out, KERNEL, padding="SAME")
    patch = PatchConv(c_out, KERNEL, padding="SAME")
    params = conv.init(jax.random.key(1), x)
    mine = patch.init(jax.random.key(1), x)
    assert jax.tree.map(jnp.shape, mine) == jax.tree.map(jnp.shape, params)
    for a, b in zip(jax.tree.leaves(mine), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)  # the same draws: the same names, shapes, initializers
    params = jax.tree.map(lambda a: a + 0.1, params)  # a nonzero bias too
    np.testing.assert_allclose(patch.apply(params, x), conv.apply(params, x), rtol=1e-5, atol=1e-6)

    def loss(module):
        return lambda p, x: jnp.sum(jnp.tanh(module.apply(p, x)) ** 2)

    (g_patch, gx_patch), (g_conv, gx_conv) = (
        jax.grad(loss(m), argnums=(0, 1))(params, x) for m in (patch, conv)
    )
    for a, b in zip(jax.tree.leaves(g_patch), jax.tree.leaves(g_conv)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gx_patch, gx_conv, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kwargs", [{"kernel_size": (5, 5)}, {"padding": "VALID"}, {"strides": 2}])
def test_patch_convolution_refuses_what_it_does_not_compute(kwargs):
    args = {"kernel_size": KERNEL, "padding": "SAME", **kwargs}
    with pytest.raises(ValueError, match="3x3, SAME-padded, stride-1"):
        PatchConv(4, **args).init(jax.random.key(0), jnp.ones((1, 6, 6, 2)))


def test_delta_orthogonal_is_an_orthogonal_centre_tap():
    w = np.array(make_initializer("delta_orthogonal", 1.5)(jax.random.key(0), (3, 3, 16, 24)))
    centre = w[1, 1]
    np.testing.assert_allclose(centre @ centre.T, 1.5**2 * np.eye(16), atol=1e-5)
    w[1, 1] = 0
    assert not w.any()  # every other tap is zero
    assert compute_fans((3, 3, 16, 24)) == (144, 216)  # receptive field x channels


def test_cnn_trains_on_digits(tiny_cfg, train):
    cfg = tiny_cfg(
        *CNN,
        "model.depth=3",
        "model.width=16",
        "train.steps=120",
        "train.optimizer=adam",
        "train.learning_rate=0.01",
    )
    he, delta = train(
        cfg, {"init.weights": "he_normal"}, {"init.weights": "delta_orthogonal", "init.gain": 1.4}
    )[0]
    for r in (he, delta):
        assert r.metrics["final_train_loss"] < 0.7 * r.metrics["initial_train_loss"]
        assert r.metrics["final_val_accuracy"] > 0.5  # chance is 0.1


def test_delta_orthogonal_linear_cnn_preserves_the_signal_exactly(tiny_cfg, train):
    cfg = tiny_cfg(*CNN, "model.activation=identity", "model.depth=6", "train.steps=20")
    [r], _ = train(cfg, {"init.weights": "delta_orthogonal"})
    q, back = r.diagnostics["pre_q"][0], r.diagnostics["backprop_norm"][0]
    # Each hidden convolution is the same orthogonal matrix applied at every pixel.
    np.testing.assert_allclose(q[1:], q[0], rtol=1e-4)
    np.testing.assert_allclose(back[1:], back[-1], rtol=1e-4)


def test_masked_cnn_depth_equals_the_real_shallower_network(tiny_cfg, train):
    variant = {"model.depth": 2, "init.weights": "he_normal"}
    [padded], _ = train(tiny_cfg(*CNN, "engine.depth_buckets=[4]"), variant)
    [exact], _ = train(tiny_cfg(*CNN, "engine.depth_buckets=[2]"), variant)
    np.testing.assert_allclose(padded.curves["loss"][1], exact.curves["loss"][1], rtol=2e-4)
    for name, value in exact.diagnostics.items():
        np.testing.assert_allclose(padded.diagnostics[name], value, rtol=1e-4, atol=1e-7)


def test_cnn_mean_field_uses_the_receptive_field_fan():
    trial = {
        "model.kind": "cnn",
        "model.width": 16,
        "model.activation": "relu",
        "model.negative_slope": 0.01,
        "init.weights": "he_normal",
        "init.gain": 1.0,
        "init.mode": "fan_in",
        "init.std": 0.01,
        "init.limit": 0.05,
        "init.value": 0.0,
        "init.bias": "zeros",
        "init.bias_value": 0.0,
        "init.bias_std": 0.0,
    }
    sw2, sb2 = predict.trial_variances(trial)
    assert sw2 == pytest.approx(2.0) and sb2 == 0.0  # He: fan_in x 2 / fan_in
    std = expected_std("he_normal", (3, 3, 16, 16), 1.0, {"mode": "fan_in"})
    assert std == pytest.approx(np.sqrt(2.0 / 144))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.kind=cnn", "data.name=gaussian"], "model.kind=cnn needs images"),
        ([*CNN, "init.weights=lsuv"], "lsuv is implemented for model.kind=mlp only"),
    ],
)
def test_cnn_config_mistakes_are_one_clear_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(overrides)
