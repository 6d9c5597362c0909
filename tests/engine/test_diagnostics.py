"""In-call signal-propagation diagnostics: planted vanishing, dead and saturated networks, exact
norm preservation, masked depth, and the forward signal against mean-field theory."""

import math

import numpy as np
import pytest

from pipeline.core import theory
from pipeline.core.metrics import DIAGNOSTIC_KEYS

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")


def test_small_gain_relu_vanishes_backward_while_weight_gradients_stay_level(tiny_cfg, train):
    cfg = tiny_cfg("model.activation=relu", "model.depth=16", "model.width=64", "train.steps=20")
    small, he = train(
        cfg, {"init.weights": "he_normal", "init.gain": 0.5}, {"init.weights": "he_normal"}
    )[0]
    # sigma_w2 = 2 x 0.5^2: ||dL/dh|| shrinks by sqrt(sigma_w2 / 2) = 1/2 per layer on the way
    # down (15 layers: 3e-5), the activation variance by sigma_w2 / 2 = 1/4 per layer going up.
    assert small.metrics["diag.init.backprop_ratio"] < 3e-4
    assert small.metrics["diag.init.act_var_ratio"] < 1e-6
    # ... and yet the weight gradients look healthy: why the back-propagated signal is recorded.
    assert 0.1 < small.metrics["diag.init.weight_grad_ratio"] < 10
    assert 0.1 < he.metrics["diag.init.backprop_ratio"] < 10
    assert set(DIAGNOSTIC_KEYS) <= set(he.metrics)


def test_dead_and_saturated_units_are_counted(tiny_cfg, train):
    relu = tiny_cfg("model.activation=relu", "model.depth=4", "train.steps=20")
    dead, alive = train(
        relu,
        {"init.weights": "he_normal", "init.bias": "constant", "init.bias_value": -10.0},
        {"init.weights": "he_normal"},
    )[0]
    assert dead.metrics["diag.init.dead_fraction"] == 1.0
    assert np.all(dead.diagnostics["backprop_norm"][0][:-1] == 0.0)  # nothing flows back
    assert alive.metrics["diag.init.dead_fraction"] < 0.3
    tanh = tiny_cfg("model.activation=tanh", "model.depth=4", "train.steps=20")
    hot, calm = train(
        tanh,
        {"init.weights": "glorot_normal", "init.gain": 10.0},
        {"init.weights": "glorot_normal"},
    )[0]
    assert hot.metrics["diag.init.saturated_fraction"] > 0.5
    assert calm.metrics["diag.init.saturated_fraction"] < 0.05
    assert hot.metrics["diag.init.dead_fraction"] == 0.0  # tanh is not a rectifier


def test_orthogonal_linear_network_preserves_both_signals_exactly(tiny_cfg, train):
    cfg = tiny_cfg("model.activation=identity", "model.depth=8", "model.width=32")
    [r], _ = train(cfg, {"init.weights": "orthogonal", "init.gain": 1.0})
    back, q = r.diagnostics["backprop_norm"][0], r.diagnostics["pre_q"][0]
    # Square orthogonal hidden kernels are isometries: ||W^T g|| = ||g|| and ||h W|| = ||h||.
    np.testing.assert_allclose(back[1:], back[-1], rtol=1e-4)
    np.testing.assert_allclose(q[1:], q[0], rtol=1e-4)
    assert r.diagnostic_steps.tolist() == [0, 20, 40, 60]


def test_masked_depth_diagnostics_equal_the_real_shallower_network(tiny_cfg, train):
    variant = {"model.depth": 3, "init.weights": "he_normal", "model.activation": "tanh"}
    [padded], _ = train(tiny_cfg("engine.depth_buckets=[8]"), variant)
    [exact], _ = train(tiny_cfg("engine.depth_buckets=[3]"), variant)
    for name, value in exact.diagnostics.items():
        assert value.shape == padded.diagnostics[name].shape
        np.testing.assert_allclose(padded.diagnostics[name], value, rtol=1e-4, atol=1e-7)


def test_forward_signal_settles_at_the_mean_field_fixed_point(tiny_cfg, train):
    """Wide tanh network, sigma_w2 = 2, sigma_b2 = 0.05: q_l -> q* (Poole et al. 2016)."""
    cfg = tiny_cfg("model.activation=tanh", "model.depth=12", "model.width=512", "train.steps=20")
    trial = {
        "init.weights": "glorot_normal",  # std sqrt(2 / (n + n)) x gain: sigma_w2 = gain^2
        "init.gain": math.sqrt(2.0),
        "init.bias": "normal",
        "init.bias_std": math.sqrt(0.05),
    }
    [r], _ = train(cfg, trial)
    q_star = theory.signal_propagation("tanh", 2.0, 0.05)["q_star"]
    measured = r.diagnostics["pre_q"][0][4:]  # past the transient from the input's length
    # One finite network: each layer's q fluctuates by ~1/sqrt(width) around q*, and so on.
    assert abs(np.mean(measured) / q_star - 1) < 0.06
    np.testing.assert_allclose(measured, q_star, rtol=0.25)


def test_constant_weights_keep_every_unit_identical_through_training(tiny_cfg, train):
    cfg = tiny_cfg("model.activation=tanh", "model.depth=4")
    constant, he = train(
        cfg, {"init.weights": "constant", "init.value": 0.05}, {"init.weights": "he_normal"}
    )[0]
    # Same weights into every unit, same gradient for every unit: symmetry is never broken.
    assert constant.metrics["diag.init.unit_spread"] < 1e-5
    assert constant.metrics["diag.final.unit_spread"] < 1e-5
    assert he.metrics["diag.init.unit_spread"] > 0.3 and he.metrics["diag.final.unit_spread"] > 0.3


def test_diagnostics_observe_without_changing_training_and_can_be_turned_off(tiny_cfg, train):
    variant = {"init.weights": "he_normal", "model.depth": 3}
    [on], _ = train(tiny_cfg(), variant)
    [off], _ = train(tiny_cfg("metrics.diagnostics=false"), variant)
    np.testing.assert_array_equal(on.curves["loss"][1], off.curves["loss"][1])
    assert on.metrics["steps_to_target"] == off.metrics["steps_to_target"]
    assert off.diagnostics == {} and not any(k.startswith("diag.") for k in off.metrics)
    assert len(on.layer_grad_norm_init) == 4 and len(off.layer_grad_norm_init) == 0
