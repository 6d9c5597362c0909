"""The network a trial trains: a Flax MLP whose hidden layers are one scanned, stacked block.

Stacking the hidden layers and scanning over them makes compile time independent of depth, and a
traced ``depth`` masks the tail of the stack so trials of different depths share one executable:
a masked layer passes its input through unchanged, so the network is exactly the shallower one.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from pipeline.activations import ACTIVATIONS


class Structure(NamedTuple):
    """What one executable is compiled for; trials that share it train in one call."""

    activation: str
    n_hidden: int  # hidden layers in the stack (the deepest trial of the group)
    width: int
    n_in: int
    n_classes: int


class _HiddenLayer(nn.Module):
    width: int
    activation: str

    @nn.compact
    def __call__(self, carry, depth, slope):
        h, index = carry
        y = ACTIVATIONS[self.activation].fn(nn.Dense(self.width, name="dense")(h), slope)
        # Layer `index` of the stack is hidden layer index + 2 (the input layer is the first).
        h = jnp.where(index + 2 <= depth, y, h)
        return (h, index + 1), None


class MLP(nn.Module):
    """``depth`` hidden layers of ``width`` units, then a linear read-out to the classes."""

    structure: Structure
    unroll: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, depth: jax.Array, slope: jax.Array) -> jax.Array:
        s = self.structure
        act = ACTIVATIONS[s.activation].fn
        h = act(nn.Dense(s.width, name="input")(x), slope)
        if s.n_hidden > 1:
            stack = nn.scan(
                _HiddenLayer,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                in_axes=(nn.broadcast, nn.broadcast),
                length=s.n_hidden - 1,
                unroll=self.unroll,
            )
            (h, _), _ = stack(s.width, s.activation, name="hidden")((h, 0), depth, slope)
        return nn.Dense(s.n_classes, name="output")(h)


def layer_shapes(structure: Structure) -> dict[str, tuple[int, int]]:
    """Kernel shape of each layer kind, from which fans and initial scales are computed."""
    s = structure
    return {
        "input": (s.n_in, s.width),
        "hidden": (s.width, s.width),
        "output": (s.width, s.n_classes),
    }


def kernel_norms(params: dict) -> jax.Array:
    """Frobenius norm of each layer's kernel (or its gradient), input layer first."""
    parts = [jnp.linalg.norm(params["input"]["kernel"])[None]]
    if "hidden" in params:
        hidden = params["hidden"]["dense"]["kernel"]
        parts.append(jnp.sqrt(jnp.sum(hidden * hidden, axis=(1, 2))))
    parts.append(jnp.linalg.norm(params["output"]["kernel"])[None])
    return jnp.concatenate(parts)


def count_flops(depth: int, width: int, n_in: int, n_classes: int, batch: int) -> int:
    """Multiply-add FLOPs of one forward and backward pass (backward = 2x forward)."""
    macs = n_in * width + (depth - 1) * width * width + width * n_classes
    return 6 * batch * macs
