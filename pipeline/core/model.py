"""The network a trial trains: a Flax MLP or small CNN whose hidden layers are one scanned,
stacked block.

Stacking the hidden layers and scanning over them makes compile time independent of depth, and a
traced ``depth`` masks the tail of the stack so trials of different depths share one executable:
a masked layer passes its input through unchanged, so the network is exactly the shallower one.

Each layer also ``sow``s its pre-activation and marks its output with ``perturb``: both are
no-ops in training (the collections are not passed), and let ``pipeline.core.diagnostics`` read the
forward signal and the back-propagated gradient dL/dh of every layer from this same model.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from pipeline.core.activations import ACTIVATIONS


class Structure(NamedTuple):
    """What one executable is compiled for; trials that share it train in one call."""

    activation: str
    n_hidden: int  # hidden layers in the stack (the deepest trial of the group)
    width: int
    n_in: int
    n_classes: int
    kind: str = "mlp"  # mlp | cnn (3x3 same-padded convolutions on square images, then a
    # global average pool and a dense read-out) | custom (a user's module)
    factory: str | None = None  # custom: model.factory, the <module>:<function> that builds it


KINDS = ("mlp", "cnn", "custom")  # custom: a user's module (model.factory)
BUILTIN_KINDS = ("mlp", "cnn")
KERNEL = (3, 3)  # the CNN's window: fans are 9 x channels (the receptive field)


def _linear(kind: str, features: int, name: str) -> nn.Module:
    """A layer's linear map; named like a dense layer either way so every consumer of the
    parameter tree (initial weights, LSUV, diagnostics, export) reads one layout."""
    if kind == "cnn":
        return nn.Conv(features, KERNEL, padding="SAME", name=name)
    return nn.Dense(features, name=name)


def _dropout(module: nn.Module, y: jax.Array, rate: jax.Array | None) -> jax.Array:
    """Inverted dropout with a traced rate (``nn.Dropout`` needs a Python one); ``rate=None``
    (evaluation, or no trial of the call uses dropout) compiles no random numbers at all."""
    if rate is None:
        return y
    keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - rate, y.shape)
    return jnp.where(keep, y / (1.0 - rate), 0.0)


class _HiddenLayer(nn.Module):
    width: int
    activation: str
    kind: str = "mlp"

    @nn.compact
    def __call__(self, carry, depth, slope, dropout):
        h, index = carry
        pre = _linear(self.kind, self.width, "dense")(h)
        self.sow("intermediates", "pre", pre)
        y = self.perturb("h", ACTIVATIONS[self.activation].fn(pre, slope))
        y = _dropout(self, y, dropout)
        # Layer `index` of the stack is hidden layer index + 2 (the input layer is the first).
        h = jnp.where(index + 2 <= depth, y, h)
        return (h, index + 1), None


class MLP(nn.Module):
    """``depth`` hidden layers of ``width`` units, then a linear read-out to the classes."""

    structure: Structure
    unroll: int = 1

    @nn.compact
    def __call__(
        self, x: jax.Array, depth: jax.Array, slope: jax.Array, dropout: jax.Array | None = None
    ) -> jax.Array:
        s = self.structure
        if s.kind == "cnn":  # flat pixels -> (batch, side, side, 1)
            side = math.isqrt(s.n_in)
            x = x.reshape(*x.shape[:-1], side, side, 1)
        pre = _linear(s.kind, s.width, "input")(x)
        self.sow("intermediates", "pre", pre)
        h = _dropout(self, self.perturb("h", ACTIVATIONS[s.activation].fn(pre, slope)), dropout)
        if s.n_hidden > 1:
            stack = nn.scan(
                _HiddenLayer,
                variable_axes={"params": 0, "intermediates": 0, "perturbations": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast, nn.broadcast, nn.broadcast),
                length=s.n_hidden - 1,
                unroll=self.unroll,
            )
            (h, _), _ = stack(s.width, s.activation, s.kind, name="hidden")(
                (h, 0), depth, slope, dropout
            )
        if s.kind == "cnn":
            h = jnp.mean(h, axis=(-3, -2))  # global average pool over positions
        return nn.Dense(s.n_classes, name="output")(h)


def layer_shapes(structure) -> dict[str, tuple[int, ...]]:
    """Kernel shape of each layer kind, from which fans and initial scales are computed
    (``structure``: a ``Structure`` or anything with its shape fields)."""
    s = structure
    if s.kind == "cnn":
        return {
            "input": (*KERNEL, 1, s.width),
            "hidden": (*KERNEL, s.width, s.width),
            "output": (s.width, s.n_classes),
        }
    return {
        "input": (s.n_in, s.width),
        "hidden": (s.width, s.width),
        "output": (s.width, s.n_classes),
    }


def count_flops(depth: int, width: int, n_in: int, n_classes: int, batch: int) -> int:
    """Multiply-add FLOPs of one forward and backward pass (backward = 2x forward)."""
    macs = n_in * width + (depth - 1) * width * width + width * n_classes
    return 6 * batch * macs
