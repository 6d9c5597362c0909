import math

import flax.linen as linen
import flax.nnx as nnx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pipeline.core.activations import ACTIVATIONS, recommended_gain
from pipeline.core.initializers import (
    INITIALIZERS,
    TRUNCATED_NORMAL_STD,
    compute_fans,
    expected_std,
    make_bias_initializer,
    make_initializer,
    resolve_gain,
)

PARAMS = {"mode": "fan_in", "std": 0.02, "limit": 0.1, "value": 0.3}
SHAPES = [(256, 256), (512, 128), (3, 3, 64, 96)]


DATA_FREE = sorted(n for n, spec in INITIALIZERS.items() if not spec.data_dependent)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", DATA_FREE)
def test_sampled_std_and_mean_match_formula(name, shape):
    gain = 1.7
    w = np.asarray(make_initializer(name, gain, PARAMS)(jax.random.key(1), shape, jnp.float32))
    assert w.shape == shape and np.isfinite(w).all()
    want = expected_std(name, shape, gain, PARAMS)
    if INITIALIZERS[name].draw == "constant":
        value = 0.0 if name == "zeros" else PARAMS["value"] * gain
        np.testing.assert_allclose(w, value)
        return
    n = w.size
    # Sample std of n draws is within about 1/sqrt(2n) of the truth; 3% is > 10 sigma here.
    assert w.std() == pytest.approx(want, rel=0.03)
    assert abs(w.mean()) < 5 * want / math.sqrt(n)


@pytest.mark.parametrize("shape", SHAPES)
def test_orthogonal_has_orthonormal_columns_times_gain(shape):
    w = np.asarray(make_initializer("orthogonal", 2.0)(jax.random.key(0), shape))
    flat = w.reshape(-1, shape[-1])
    gram = flat.T @ flat if flat.shape[0] >= flat.shape[1] else flat @ flat.T
    np.testing.assert_allclose(gram, 4.0 * np.eye(gram.shape[0]), atol=1e-4)


def test_formulas_of_the_papers():
    fans = compute_fans((300, 100))
    assert fans == (300, 100)
    he = expected_std("he_normal", (300, 100), 1.0, {"mode": "fan_in"})
    assert he == pytest.approx(math.sqrt(2 / 300))
    assert expected_std("he_normal", (300, 100), 1.0, {"mode": "fan_out"}) == pytest.approx(
        math.sqrt(2 / 100)
    )
    assert expected_std("glorot_uniform", (300, 100), 1.0, {}) == pytest.approx(math.sqrt(2 / 400))
    assert expected_std("lecun_normal", (300, 100), 1.0, {"mode": "fan_in"}) == pytest.approx(
        math.sqrt(1 / 300)
    )
    assert expected_std("truncated_normal", (300, 100), 1.0, {"std": 0.1}) == pytest.approx(
        0.1 * TRUNCATED_NORMAL_STD
    )
    # Convolutions: the receptive field multiplies both fans.
    assert compute_fans((3, 3, 16, 32)) == (144, 288)


def test_auto_gain_follows_torch_calculate_gain():
    assert recommended_gain("relu") == pytest.approx(math.sqrt(2))
    assert recommended_gain("tanh") == pytest.approx(5 / 3)
    assert recommended_gain("leaky_relu", 0.2) == pytest.approx(math.sqrt(2 / 1.04))
    assert recommended_gain("selu") == pytest.approx(0.75)
    # He's formula already holds ReLU's sqrt(2): auto leaves it alone for ReLU...
    assert resolve_gain("he_normal", "auto", "relu", 0.01) == pytest.approx(1.0)
    # ...and rescales it to kaiming_normal_(nonlinearity="tanh") for tanh.
    assert resolve_gain("he_normal", "auto", "tanh", 0.01) == pytest.approx((5 / 3) / math.sqrt(2))
    assert resolve_gain("glorot_normal", "auto", "tanh", 0.01) == pytest.approx(5 / 3)
    assert resolve_gain("normal", "auto", "tanh", 0.01) == 1.0
    assert resolve_gain("orthogonal", 0.5, "relu", 0.01) == 0.5
    assert set(ACTIVATIONS) >= {
        "identity",
        "relu",
        "leaky_relu",
        "elu",
        "selu",
        "gelu",
        "silu",
        "tanh",
        "sigmoid",
    }


def test_bias_initializers():
    key = jax.random.key(0)
    assert np.all(np.asarray(make_bias_initializer("zeros")(key, (64,))) == 0)
    np.testing.assert_allclose(make_bias_initializer("constant", value=0.1)(key, (64,)), 0.1)
    b = np.asarray(make_bias_initializer("normal", std=0.5)(key, (20000,)))
    assert b.std() == pytest.approx(0.5, rel=0.03)


def test_works_as_kernel_init_in_flax_nnx_and_linen():
    init = make_initializer("he_normal", 1.0, {"mode": "fan_in"})
    layer = nnx.Linear(512, 256, kernel_init=init, rngs=nnx.Rngs(0))
    assert float(layer.kernel[...].std()) == pytest.approx(math.sqrt(2 / 512), rel=0.03)
    dense = linen.Dense(256, kernel_init=init)
    params = dense.init(jax.random.key(0), jnp.ones((1, 512)))["params"]
    assert float(params["kernel"].std()) == pytest.approx(math.sqrt(2 / 512), rel=0.03)
    # Inside jit, as Flax often calls initializers.
    w = jax.jit(lambda k: init(k, (512, 256), jnp.float32))(jax.random.key(1))
    assert float(w.std()) == pytest.approx(math.sqrt(2 / 512), rel=0.03)
