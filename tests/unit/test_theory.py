"""Mean-field theory against closed forms, the literature, and Monte Carlo on wide networks."""

import math

import numpy as np
import pytest

from pipeline.core.theory import critical_sigma_w2, signal_propagation


@pytest.mark.parametrize("sigma_w2", [0.5, 1.0, 1.7, 2.0, 2.5])
def test_relu_chi1_is_half_sigma_w2(sigma_w2):
    # phi'(u)^2 is a unit step, so E[phi'^2] = 1/2 whatever q* is.
    assert signal_propagation("relu", sigma_w2, 0.0)["chi1"] == pytest.approx(
        sigma_w2 / 2, rel=1e-9
    )


def test_relu_length_fixed_point_is_closed_form():
    # q* = sigma_w2 q*/2 + sigma_b2  =>  q* = sigma_b2 / (1 - sigma_w2 / 2)
    assert signal_propagation("relu", 1.6, 0.1)["q_star"] == pytest.approx(0.5, rel=1e-9)


def test_relu_edge_of_chaos_is_he_initialization():
    assert critical_sigma_w2("relu", 0.0) == pytest.approx(2.0, rel=1e-6)
    assert signal_propagation("relu", 2.0, 0.0)["xi_c"] == math.inf


def test_tanh_is_critical_at_sigma_w2_one_without_bias():
    assert critical_sigma_w2("tanh", 0.0) == pytest.approx(1.0, abs=1e-6)


def test_tanh_with_bias_matches_schoenholz():
    # Schoenholz et al. 2017, Fig. 1: the critical line passes sigma_w2 ~ 1.76 at sigma_b2 = 0.05.
    assert critical_sigma_w2("tanh", 0.05) == pytest.approx(1.76, abs=0.01)
    ordered = signal_propagation("tanh", 1.2, 0.05)
    chaotic = signal_propagation("tanh", 3.0, 0.05)
    assert ordered["chi1"] < 1 and ordered["c_star"] == 1.0
    assert chaotic["chi1"] > 1 and chaotic["c_star"] < 1
    # Trainable depth peaks at criticality.
    near = signal_propagation("tanh", 1.75, 0.05)["max_trainable_depth"]
    assert near > ordered["max_trainable_depth"] and near > chaotic["max_trainable_depth"]


@pytest.mark.parametrize(
    ("activation", "sigma_w2", "sigma_b2"),
    [("tanh", 1.5, 0.05), ("relu", 1.6, 0.1), ("gelu", 2.0, 0.02)],
)
def test_quadrature_matches_monte_carlo_on_a_wide_random_network(activation, sigma_w2, sigma_b2):
    from pipeline.core.activations import ACTIVATIONS

    theory = signal_propagation(activation, sigma_w2, sigma_b2)
    rng = np.random.default_rng(0)
    width, depth = 1500, 30
    phi = ACTIVATIONS[activation].fn
    h = rng.normal(size=width)  # q_0 = 1
    qs = []
    for _ in range(depth):
        w = rng.normal(0, math.sqrt(sigma_w2 / width), (width, width))
        b = rng.normal(0, math.sqrt(sigma_b2), width)
        h = w @ np.asarray(phi(h, 0.01)) + b
        qs.append(np.mean(h**2))
    # After 30 layers the length has converged to q*; finite width leaves a few percent of
    # noise (each layer's q is a mean over `width` correlated units), hence 8%.
    assert np.mean(qs[-10:]) == pytest.approx(theory["q_star"], rel=0.08)


def test_chaotic_tanh_without_bias_decorrelates_fully_and_depth_scale_falls_smoothly():
    # An odd activation with sigma_b2 = 0 maps c = 0 to 0: the stable fixed point is c* = 0,
    # and xi_c then shrinks steadily as sigma_w2 grows (a bracket test once mistook the sign of
    # rounding noise at c = 0 and made 6 xi_c jump between 8 and 24 layers).
    scales = []
    for sigma_w2 in (2.0, 4.0, 8.0, 12.0, 20.0, 30.0):
        p = signal_propagation("tanh", sigma_w2, 0.0)
        assert abs(p["c_star"]) < 1e-9
        scales.append(p["xi_c"])
    assert all(a > b for a, b in zip(scales, scales[1:]))


def test_the_trial_adapters_still_read_through_theory_as_predicts_own():
    # Split out of theory (issue 25); callers written before read them as theory's.
    import pipeline.theory
    from pipeline.core import predict, theory

    assert theory.MOVED_TO_PREDICT
    for name in theory.MOVED_TO_PREDICT:
        assert getattr(theory, name) is getattr(predict, name) is getattr(pipeline.theory, name)
        assert name in dir(theory)
    with pytest.raises(AttributeError, match="no attribute 'trial_predictions'"):
        theory.trial_predictions  # noqa: B018
