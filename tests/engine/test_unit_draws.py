"""The unit draws: their distributions, what each number depends on, one executable for
layouts of similar size."""

import math

import jax
import numpy as np
import pytest
from scipy import stats

from pipeline.core import unit_draws
from pipeline.core.initializers import TRUNCATED_NORMAL_STD
from pipeline.core.net import BIAS, KERNEL, Layout, make_leaf
from pipeline.core.unit_draws import UnitSampler

KEY = jax.random.key(3)
DRAWS = ("normal", "truncated_normal", "uniform", "constant", "orthogonal")


def _layout(*leaves) -> Layout:
    """Leaves given as (path, shape, stacked axes, role)."""
    out = []
    for path, shape, stack, role in leaves:
        leaf = make_leaf(path, shape, None)
        fan = shape[stack:] if role == KERNEL else ()
        out.append(leaf._replace(role=role, stack=stack, fan_shape=fan))
    return Layout(tuple(out))


MLP = _layout(
    ("input/kernel", (12, 32), 0, KERNEL),
    ("input/bias", (32,), 0, BIAS),
    ("hidden/dense/kernel", (3, 32, 32), 1, KERNEL),
    ("hidden/dense/bias", (3, 32), 1, BIAS),
    ("output/kernel", (32, 5), 0, KERNEL),
)


def _raw(layout: Layout, draws=DRAWS, n_seeds: int = 2) -> dict:
    return UnitSampler(layout, draws, None).raw(KEY, n_seeds)


def test_each_source_has_its_distribution():
    big = _layout(("w", (400, 500), 0, KERNEL))
    w = _raw(big, n_seeds=1)["w"][0]
    normal, truncated, uniform, constant, orthogonal_raw = (w[i].ravel() for i in range(5))
    # Kolmogorov-Smirnov against each distribution: 200,000 values each.
    assert stats.kstest(normal, "norm").pvalue > 1e-3
    assert stats.kstest(truncated, stats.truncnorm(-2, 2).cdf).pvalue > 1e-3
    assert stats.kstest(uniform, stats.uniform(-1, 2).cdf).pvalue > 1e-3
    assert truncated.std() == pytest.approx(TRUNCATED_NORMAL_STD, rel=0.01)
    assert np.abs(truncated).max() < 2.0 and uniform.min() >= -1.0 and uniform.max() < 1.0
    assert (constant == 1.0).all()
    np.testing.assert_array_equal(orthogonal_raw, normal)  # orthogonal starts from the normal
    assert abs(np.corrcoef(normal, uniform)[0, 1]) < 0.01  # the sources are independent


def test_a_number_depends_on_its_seed_leaf_and_layer_only():
    raw = _raw(MLP, n_seeds=3)
    # Seed i is the same whatever the number of seeds.
    one = _raw(MLP, n_seeds=1)
    for path in one:
        np.testing.assert_array_equal(one[path][0], raw[path][0])
    # A leaf's draw does not depend on the module's other leaves ...
    alone = _raw(_layout(("output/kernel", (32, 5), 0, KERNEL)), n_seeds=3)
    np.testing.assert_array_equal(alone["output/kernel"], raw["output/kernel"])
    # ... nor on the stack height: a deeper stack starts with the same layers.
    deeper = _layout(("hidden/dense/kernel", (7, 32, 32), 1, KERNEL))
    np.testing.assert_array_equal(
        _raw(deeper, n_seeds=3)["hidden/dense/kernel"][:, :, :3], raw["hidden/dense/kernel"]
    )
    # Seeds, layers and leaves differ.
    hidden = raw["hidden/dense/kernel"]
    assert not np.allclose(hidden[0], hidden[1])
    assert not np.allclose(hidden[:, :, 0], hidden[:, :, 1])
    assert not np.allclose(raw["input/bias"], raw["hidden/dense/bias"][:, 0])


def test_shapes_are_what_the_sampler_returns():
    sampler = UnitSampler(MLP, DRAWS, None)
    got = sampler(KEY, 2)
    shapes = sampler.shapes(2)
    assert {p: a.shape for p, a in got.items()} == {p: s.shape for p, s in shapes.items()}
    assert got["hidden/dense/kernel"].shape == (2, len(DRAWS), 3, 32, 32)
    assert got["hidden/dense/bias"].shape == (2, 3, 32)


def test_layouts_of_similar_size_share_one_executable():
    unit_draws._flat_compiled.cache_clear()
    for width in (30, 31, 32):
        layout = _layout(("a", (width, width), 0, KERNEL), ("b", (width,), 0, BIAS))
        UnitSampler(layout, ("normal",), None).raw(KEY, 2)
    assert unit_draws._flat_compiled.cache_info().misses == 1
    # The bucket holds every pair: a layout's numbers never wrap.
    plan = unit_draws._plan(layout, ("normal",), 2)
    assert plan.n_pairs >= 2 * (math.ceil(32 * 32 / 2) + 16)
