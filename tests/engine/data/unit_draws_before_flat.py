"""The unit draws as the engine sampled them before ``pipeline.core.unit_draws`` (commit 94fea22,
``pipeline/core/train.py: _unit_sampler``, its sampling code unchanged): a threefry call per group
of leaves of one shape, each layer's key ``fold_in(fold_in(seed key, tag), layer index)``.

``tests/engine/test_any_step_count.py`` feeds them to today's engine to check that the training
itself still gives the numbers it recorded with them."""

import functools
import itertools

import jax
import jax.numpy as jnp

from pipeline.core.initializers import raw_draw, raw_source
from pipeline.core.net import Layout, flatten
from pipeline.core.unit_draws import UnitSampler


def unit_draws_before_flat(layout: Layout, draws: tuple, own, key, n_seeds: int) -> dict:
    """Finished unit draws, ``UnitSampler``'s layout, from the sampler of commit 94fea22."""

    def per_layer(key, leaves, sample) -> dict:
        tags = jnp.asarray([leaf.tag for leaf in leaves for _ in range(leaf.layers)], jnp.int32)
        index = jnp.asarray([i for leaf in leaves for i in range(leaf.layers)], jnp.int32)
        keys = jax.vmap(lambda t, i: jax.random.fold_in(jax.random.fold_in(key, t), i))(tags, index)
        values = jax.vmap(sample)(keys)  # (all layers, ...)
        ends = itertools.accumulate(leaf.layers for leaf in leaves)
        return {leaf.path: values[end - leaf.layers : end] for leaf, end in zip(leaves, ends)}

    def by_shape(leaves, shape) -> list[list]:
        groups: dict = {}
        for leaf in leaves:
            groups.setdefault(shape(leaf), []).append(leaf)
        return list(groups.values())

    def per_seed(key):
        units = {}
        for leaves in by_shape(layout.kernels, lambda leaf: (leaf.fan_shape, leaf.layer_shape)):
            fan, layer = leaves[0].fan_shape, leaves[0].layer_shape

            def kernel(k, fan=fan, layer=layer):
                sources = dict.fromkeys(raw_source(d) for d in draws)
                raw = {s: raw_draw(s, k, fan).reshape(layer) for s in sources}
                return jnp.stack([raw[raw_source(d)] for d in draws])

            stacked = per_layer(key, leaves, kernel)
            for leaf in leaves:  # (layers, draws, *layer) -> (draws, *shape)
                units[leaf.path] = jnp.moveaxis(stacked[leaf.path], 1, 0).reshape(
                    len(draws), *leaf.shape
                )
        for leaves in by_shape(layout.biases, lambda leaf: leaf.layer_shape):
            layer = leaves[0].layer_shape
            stacked = per_layer(key, leaves, lambda k, layer=layer: jax.random.normal(k, layer))
            for leaf in leaves:
                units[leaf.path] = stacked[leaf.path].reshape(leaf.shape)
        if layout.others:
            values = flatten(own(key))
            units.update({leaf.path: values[leaf.path] for leaf in layout.others})
        return units

    def sample(key: jax.Array, n_seeds: int):
        keys = jax.vmap(functools.partial(jax.random.fold_in, key))(jnp.arange(n_seeds))
        return jax.vmap(per_seed)(keys)

    raw = jax.device_get(jax.jit(sample, static_argnums=1)(key, n_seeds))
    return UnitSampler(layout, tuple(draws), own).finish(raw)
