"""Activation registry: the function and its recommended gain.

Recommended gains follow ``torch.nn.init.calculate_gain`` so that ``init.gain=auto`` means the
same thing here as in PyTorch: the factor that keeps the variance of a layer's output equal to the
variance of its input for that nonlinearity (He et al. 2015 derive the ReLU value, sqrt(2)).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from pipeline.core.names import ACTIVATION_NAMES, check_registry


class Activation(NamedTuple):
    fn: Callable[[jax.Array, jax.Array], jax.Array]  # (x, negative_slope) -> y
    gain: Callable[[float], float]  # negative_slope -> recommended gain
    rectifier: bool = False  # a unit whose input stays <= 0 is dead (no or tiny gradient)
    bounds: tuple[float, float] | None = None  # a bounded output saturates near its bounds


def _constant(value: float) -> Callable[[float], float]:
    return lambda slope: value


ACTIVATIONS: dict[str, Activation] = {
    "identity": Activation(lambda x, s: x, _constant(1.0)),
    "relu": Activation(lambda x, s: jax.nn.relu(x), _constant(math.sqrt(2.0)), rectifier=True),
    # The slope is a traced per-trial number, so one executable serves every slope.
    "leaky_relu": Activation(
        lambda x, s: jnp.where(x >= 0, x, s * x),
        lambda s: math.sqrt(2.0 / (1.0 + s * s)),
        rectifier=True,
    ),
    # torch has no recommended gain for ELU, GELU or SiLU; like torch.nn.init we fall back to 1.
    "elu": Activation(lambda x, s: jax.nn.elu(x), _constant(1.0)),
    # torch's 3/4 for SELU; Klambauer et al. 2017 pair SELU with LeCun normal at gain 1 instead.
    "selu": Activation(lambda x, s: jax.nn.selu(x), _constant(0.75)),
    "gelu": Activation(lambda x, s: jax.nn.gelu(x), _constant(1.0)),
    "silu": Activation(lambda x, s: jax.nn.silu(x), _constant(1.0)),
    "swish": Activation(lambda x, s: jax.nn.silu(x), _constant(1.0)),
    "tanh": Activation(lambda x, s: jnp.tanh(x), _constant(5.0 / 3.0), bounds=(-1.0, 1.0)),
    "sigmoid": Activation(lambda x, s: jax.nn.sigmoid(x), _constant(1.0), bounds=(0.0, 1.0)),
}
check_registry(ACTIVATIONS, ACTIVATION_NAMES)  # the schema checks init values against the names


# One executable can serve several activations (``engine.merge_activations``): its structure's
# activation is their names joined, "relu|tanh", and each row picks its own by a traced index.
MERGED = "|"


def names_of(activation: str) -> tuple[str, ...]:
    """The activations a structure's ``activation`` stands for: one, or a merged set's."""
    return tuple(activation.split(MERGED))


def activate(activation: str, x: jax.Array, slope: jax.Array, index: jax.Array | None = None):
    """phi(x) for a structure's ``activation``; a merged one picks its branch by ``index``
    (``lax.switch``: under ``vmap`` with a per-row index every branch is computed and the
    row's is selected, forward and backward, so a row gets exactly its own activation)."""
    names = names_of(activation)
    if len(names) == 1:
        return ACTIVATIONS[activation].fn(x, slope)
    index = 0 if index is None else index  # shapes only (a layout, initial values)
    return jax.lax.switch(index, [ACTIVATIONS[n].fn for n in names], x, slope)


def recommended_gain(activation: str, negative_slope: float = 0.01) -> float:
    """The gain ``torch.nn.init.calculate_gain`` recommends for ``activation``."""
    return ACTIVATIONS[activation].gain(negative_slope)
