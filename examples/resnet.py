"""A small residual network of your own, in Flax NNX: what ``model.kind=custom`` sweeps.

``make_model`` is the factory the sweep calls (``model.factory=examples.resnet:make_model``). It
takes the structural values it names (any of ``depth``, ``width``, ``activation``, ``n_features``,
``n_classes``) and returns the module; the module's ``__call__(x, train)`` gives logits. The
engine reads the parameter paths (``embed/kernel``, ``blocks/0/fc/kernel``,
``blocks/0/out_proj/kernel``, ``head/kernel``, ...), initializes every kernel and bias with the
trial's initializer and rules, and leaves the LayerNorm scales and offsets as the module made them.
"""

from __future__ import annotations

import jax
from flax import nnx


def _activation(name: str):
    return (lambda x: x) if name == "identity" else getattr(jax.nn, name)


class Block(nnx.Module):
    """x + out_proj(act(fc(norm(x)))): a pre-norm residual block."""

    def __init__(self, width: int, activation: str, rngs: nnx.Rngs):
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.fc = nnx.Linear(width, width, rngs=rngs)
        self.out_proj = nnx.Linear(width, width, rngs=rngs)
        self.activation = activation

    def __call__(self, x: jax.Array) -> jax.Array:
        return x + self.out_proj(_activation(self.activation)(self.fc(self.norm(x))))


class ResNet(nnx.Module):
    def __init__(self, n_features, n_classes, depth, width, activation, rngs: nnx.Rngs):
        self.embed = nnx.Linear(n_features, width, rngs=rngs)
        self.blocks = nnx.List([Block(width, activation, rngs) for _ in range(depth)])
        self.head = nnx.Linear(width, n_classes, rngs=rngs)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        h = self.embed(x)
        for block in self.blocks:
            h = block(h)
        return self.head(h)


def make_model(
    depth: int = 4, width: int = 64, activation: str = "relu", n_features: int = 30,
    n_classes: int = 2,
) -> ResNet:  # fmt: skip
    return ResNet(n_features, n_classes, depth, width, activation, nnx.Rngs(0))
