"""The unit draws: every parameter's random numbers at scale 1, sampled once per sweep, layout
and seed, outside the training executable (threefry inside the training call tripled its compile
time). Rows pick their draw by index and multiply by their scale (``train.init_params``), so
trials that share a seed share the same random directions and differ only in distribution and
scale: common random numbers make their comparison sharper.

Every number is a counter-based hash (Threefry-2x32: Salmon et al. 2011, "Parallel random
numbers: as easy as 1, 2, 3"; JAX's own generator) of where it sits:

    seed key   = threefry(sweep key, (seed index, 0))
    layer key  = threefry(seed key, (tag of the leaf's path, layer index in its stack))
    two values = threefry(layer key, (source, pair index in the layer)),

turned into a standard normal, a normal truncated to [-2, 2] or a uniform on [-1, 1) by the
inverse CDF, as ``jax.random`` does. So a leaf's draw depends neither on the other leaves of the
module nor on the stack height (a masked deep stack starts exactly like the real shallower
network), seed i is the same whatever the number of seeds, and any leading block of a draw is
a draw of its own shape (``reports.coord_check``).

All of a layout's numbers come from one compiled call over a flat vector, whose inputs are the
layout's segments (one per seed, leaf, source and layer): its shape depends only on the
segment and value counts, rounded up, so layouts of similar size share one executable. It
replaced a sampler compiled per layout with a threefry call per group of leaves, which took as
long to compile as the training step itself: 1.0-1.1 s against 0.26 s for a width-16 MLP, 2 s
for a small transformer, 52 such compiles in ``make test-fast``.

The orthogonal draws start from the normal draw's numbers; ``finish`` orthonormalizes them
with NumPy on the host (``initializers.finish_draw`` says why not inside XLA). Leaves that are
neither kernels nor biases (norm scales, gates, embedding tables) take the module's own initial
values, from its own initializers, per seed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import threefry2x32_p

from pipeline.core.initializers import finish_draw, raw_source
from pipeline.core.net import Layout, Net, flatten

# The random sources of the flat call; ``constant`` needs none (its unit draw is all ones) and
# the orthogonal draws start from the normal one's numbers (``initializers.raw_source``).
SOURCES = ("normal", "truncated_normal", "uniform")
TRUNCATION = 2.0  # the truncated normal's bounds, in standard deviations (as jax.random's)


class Segments(NamedTuple):
    """The flat call's input: per segment (a seed's layer of a leaf, from one source), where its
    numbers start in the flat vector (in pairs of values; padding segments start past the end)."""

    seed: np.ndarray  # uint32
    tag: np.ndarray  # uint32: Leaf.tag, from the path
    layer: np.ndarray  # uint32: the layer's index in its stack
    source: np.ndarray  # uint32: index into SOURCES
    start: np.ndarray  # int32, ascending


def _bucket(n: int, floor: int, step: int) -> int:
    """``n`` rounded up: to a power of two from ``floor`` to ``step``, then to a multiple of
    ``step`` (at most ``step`` values computed for nothing)."""
    if n <= step:
        return max(floor, 1 << max(n - 1, 0).bit_length())
    return -(-n // step) * step


def _hash(k1, k2, x1, x2) -> tuple[jax.Array, jax.Array]:
    return tuple(threefry2x32_p.bind(k1, k2, x1, x2))


def _flat(root: jax.Array, segments: Segments, n_pairs: int) -> jax.Array:
    """``2 * n_pairs`` unit values: pair ``i`` belongs to the last segment that starts at or
    before it and is its layer key's hash of (source, i - start)."""
    seed, tag, layer, source, start = segments
    k1, k2 = (jnp.broadcast_to(w, seed.shape) for w in root)
    seed_key = _hash(k1, k2, seed, jnp.zeros_like(seed))
    c, d = _hash(*seed_key, tag, layer)
    i = jnp.arange(n_pairs, dtype=jnp.int32)
    j = jnp.searchsorted(start, i, side="right") - 1
    src = source[j]
    w0, w1 = _hash(c[j], d[j], src, (i - start[j]).astype(jnp.uint32))
    bits = jnp.stack([w0, w1], -1).reshape(-1)
    src = jnp.repeat(src, 2)
    # 23 random mantissa bits under the exponent of 1.0: a float in [1, 2), minus 1 (jax.random).
    mantissa = jax.lax.shift_right_logical(bits, jnp.uint32(9)) | jnp.uint32(0x3F800000)
    u = jax.lax.bitcast_convert_type(mantissa, jnp.float32) - 1.0  # U[0, 1)
    # Inverse CDFs: z = sqrt(2) erfinv(v), v uniform on (-1, 1) for the normal and on
    # (erf(-2/sqrt 2), erf(2/sqrt 2)) for the truncated normal (jax.random.truncated_normal).
    low = jnp.nextafter(jnp.float32(-1.0), jnp.float32(0.0))
    t_low, t_high = (math.erf(b / math.sqrt(2.0)) for b in (-TRUNCATION, TRUNCATION))
    truncated = src == SOURCES.index("truncated_normal")
    v = jnp.where(truncated, t_low + (t_high - t_low) * u, low + (1.0 - low) * u)
    z = math.sqrt(2.0) * jax.lax.erf_inv(v)
    inside = jnp.nextafter(jnp.float32(TRUNCATION), jnp.float32(0.0))
    z = jnp.where(truncated, jnp.clip(z, -inside, inside), z)
    return jnp.where(src == SOURCES.index("uniform"), 2.0 * u - 1.0, z)


_flat_jit = jax.jit(_flat, static_argnums=2)


@functools.cache
def _flat_compiled(n_segments: int, n_pairs: int):
    """The flat call for these (bucketed) sizes, compiled once per process (and cached on disk
    by JAX's persistent compilation cache, where one is set)."""
    u32 = jax.ShapeDtypeStruct((n_segments,), jnp.uint32)
    start = jax.ShapeDtypeStruct((n_segments,), jnp.int32)
    root = jax.ShapeDtypeStruct((2,), jnp.uint32)
    return _flat_jit.lower(root, Segments(u32, u32, u32, u32, start), n_pairs).compile()


class _Plan(NamedTuple):
    segments: Segments  # padded to the bucket
    n_pairs: int  # bucketed
    blocks: list  # per seed: {leaf path: (offset in values, sources, layers, padded size)}


@functools.cache
def _plan(layout: Layout, sources: tuple[str, ...], n_seeds: int) -> _Plan:
    rows, blocks, pairs = [], [], 0
    for seed in range(n_seeds):
        where = {}
        leaves = [(leaf, sources) for leaf in layout.kernels]
        leaves += [(leaf, ("normal",)) for leaf in layout.biases]
        for leaf, leaf_sources in leaves:
            size = math.prod(leaf.layer_shape)
            half = -(-size // 2)  # a layer's numbers start at an even place: whole pairs
            where[leaf.path] = (2 * pairs, len(leaf_sources), leaf.layers, 2 * half)
            for source in leaf_sources:
                for layer in range(leaf.layers):
                    rows.append((seed, leaf.tag, layer, SOURCES.index(source), pairs))
                    pairs += half
        blocks.append(where)
    n_pairs = _bucket(pairs, 1 << 11, 1 << 21)
    n_segments = _bucket(len(rows), 8, 1 << 12)
    rows += [(0, 0, 0, 0, n_pairs)] * (n_segments - len(rows))  # start past every pair
    columns = np.array(rows, np.int64).T
    segments = Segments(*(c.astype(np.uint32) for c in columns[:4]), columns[4].astype(np.int32))
    return _Plan(segments, n_pairs, blocks)


@functools.cache
def _own_values(own: Callable, paths: tuple[str, ...]) -> Callable:
    """Jitted ``(key, n_seeds) -> {path: (seeds, *shape)}``: the module's own initial values
    of ``paths``, seed i from ``own(fold_in(key, i))``."""

    def sample(key, n_seeds):
        keys = jax.vmap(functools.partial(jax.random.fold_in, key))(jnp.arange(n_seeds))
        values = jax.vmap(lambda k: flatten(own(k)))(keys)
        return {path: values[path] for path in paths}

    return jax.jit(sample, static_argnums=1)


class UnitSampler(NamedTuple):
    """Every unit draw of every parameter leaf, per seed index: ``sampler(key, n_seeds)`` gives
    kernels ``(seeds, draws, *shape)``, biases a standard normal ``(seeds, *shape)``, other
    leaves the module's own initial values ``(seeds, *shape)``, as NumPy arrays.

    ``raw`` leaves the orthogonal draws unfinished (``finish`` orthonormalizes them on the host);
    ``compile(key, n_seeds)`` does the compiling ahead (the engine runs it on its compile pool)
    and returns the function of ``key`` that ``raw`` calls.
    """

    layout: Layout
    draws: tuple[str, ...]
    own: Callable | None

    @property
    def sources(self) -> tuple[str, ...]:
        used = {raw_source(d) for d in self.draws}
        return tuple(s for s in SOURCES if s in used)

    def compile(self, key: jax.Array, n_seeds: int) -> Callable[[jax.Array], dict]:
        plan = _plan(self.layout, self.sources, n_seeds)
        flat = _flat_compiled(len(plan.segments.start), plan.n_pairs)
        own = self._own_fn()
        own = own and own.lower(key, n_seeds).compile()
        return functools.partial(self._run, plan, flat, own)

    def _own_fn(self) -> Callable | None:
        """The jitted sampler of the ``other`` leaves' own values; None when there are none."""
        if not self.layout.others:
            return None
        return _own_values(self.own, tuple(leaf.path for leaf in self.layout.others))

    def _run(self, plan: _Plan, flat, own, key: jax.Array) -> dict:
        values = np.asarray(flat(_root(key), plan.segments))
        units = {}
        for leaf in self.layout.kernels:
            per_seed = [self._kernel(values, where[leaf.path], leaf) for where in plan.blocks]
            units[leaf.path] = np.stack(per_seed)
        for leaf in self.layout.biases:
            per_seed = [_block(values, where[leaf.path], leaf)[0] for where in plan.blocks]
            units[leaf.path] = np.stack(per_seed)
        if own is not None:
            units.update(jax.device_get(own(key)))
        return units

    def _kernel(self, values: np.ndarray, where: tuple, leaf) -> np.ndarray:
        by_source = dict(zip(self.sources, _block(values, where, leaf)))
        ones = np.ones(leaf.shape, np.float32)
        return np.stack([by_source.get(raw_source(d), ones) for d in self.draws])

    def raw(self, key: jax.Array, n_seeds: int) -> dict:
        return self.compile(key, n_seeds)(key)

    def __call__(self, key: jax.Array, n_seeds: int) -> dict:
        return self.finish(self.raw(key, n_seeds))

    def finish(self, raw: dict) -> dict:
        units = dict(raw)
        for leaf in self.layout.kernels:
            # (seeds, draws, *stack, *layer) -> one layer's fan shape, finished, and back
            stacked = np.asarray(units[leaf.path])
            fan = stacked.reshape(*stacked.shape[: 2 + leaf.stack], *leaf.fan_shape)
            rank = len(leaf.fan_shape)
            parts = [finish_draw(d, fan[:, i], rank) for i, d in enumerate(self.draws)]
            units[leaf.path] = np.stack(parts, axis=1).reshape(stacked.shape).astype(np.float32)
        return units

    def shapes(self, n_seeds: int) -> dict[str, jax.ShapeDtypeStruct]:
        """What ``raw`` and ``__call__`` return, as shapes."""
        out = {
            leaf.path: jax.ShapeDtypeStruct((n_seeds, len(self.draws), *leaf.shape), jnp.float32)
            for leaf in self.layout.kernels
        }
        out.update(
            (leaf.path, jax.ShapeDtypeStruct((n_seeds, *leaf.shape), jnp.float32))
            for leaf in self.layout.biases
        )
        own = self._own_fn()
        if own is not None:
            out.update(jax.eval_shape(lambda key: own(key, n_seeds), jax.random.key(0)))
        return out

    def hlo(self, key: jax.Array, n_seeds: int) -> str:
        """The text of every executable the sampler runs (the tests read it)."""
        plan = _plan(self.layout, self.sources, n_seeds)
        texts = [_flat_jit.lower(_root(key), plan.segments, plan.n_pairs).as_text()]
        own = self._own_fn()
        if own is not None:
            texts.append(own.lower(key, n_seeds).as_text())
        return "\n".join(texts)


def _root(key: jax.Array) -> np.ndarray:
    """The two words of a threefry key (``jax.random.key``'s default implementation)."""
    words = np.asarray(jax.random.key_data(key), np.uint32)
    if words.shape != (2,):
        raise ValueError(f"unit draws need a threefry key of 2 words, not {words.shape}")
    return words


def _block(values: np.ndarray, where: tuple, leaf) -> np.ndarray:
    """A leaf's numbers of one seed, ``(sources, *shape)``, from the flat vector."""
    offset, n_sources, layers, padded = where
    block = values[offset : offset + n_sources * layers * padded]
    size = math.prod(leaf.layer_shape)
    return block.reshape(n_sources, layers, padded)[..., :size].reshape(n_sources, *leaf.shape)


def make_unit_draws(net: Net, draws: Sequence[str]) -> UnitSampler:
    """The unit sampler of a network's layout for a sweep's ``draws``. The network matters only
    through its own initial values of ``other`` leaves (``net_for`` gives one ``Net`` per
    structure); the compiled pieces are shared by every sampler of the process."""
    return UnitSampler(net.layout, tuple(draws), net.own if net.layout.others else None)
