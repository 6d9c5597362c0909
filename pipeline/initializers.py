"""Weight and bias initializers: one registry, one sampler shared by training and export.

Every initializer draws a *unit* sample from one of a few distributions and multiplies it by a
scale computed from the layer's fans and the gain. Keeping the distribution (a small integer) and
the scale (a float) apart is what lets one compiled training call initialize a whole batch of
trials that use different initializers: both are traced arrays, not Python choices.

Formulas (std for normal, limit for uniform), before the gain multiplies them:

============================  ======================================  =============================
initializer                   scale                                   source
============================  ======================================  =============================
glorot/xavier_normal          sqrt(2 / (fan_in + fan_out))            Glorot & Bengio 2010, eq. 16
glorot/xavier_uniform         sqrt(6 / (fan_in + fan_out))            Glorot & Bengio 2010, eq. 16
he/kaiming_normal             sqrt(2 / fan)                           He et al. 2015, eq. 10
he/kaiming_uniform            sqrt(6 / fan)                           He et al. 2015 (uniform form)
lecun_normal                  sqrt(1 / fan)                           LeCun et al. 1998, "Efficient
lecun_uniform                 sqrt(3 / fan)                           BackProp", section 4.6
orthogonal                    1 (rows or columns orthonormal)         Saxe et al. 2013
delta_orthogonal              1 (orthogonal centre tap, zeros around) Xiao et al. 2018
lsuv                          orthonormal, then each layer rescaled   Mishkin & Matas 2015
                              to output variance gain^2 on data       (``pipeline.lsuv``)
normal / truncated_normal     init.std                                seed article's "random"
uniform                       init.limit                              U(-limit, limit)
constant / zeros              init.value / 0                          seed article's zero init
============================  ======================================  =============================

``fan`` is ``fan_in`` or ``fan_out`` as ``init.mode`` says (He and LeCun only). Truncated normal
cuts at two standard deviations and, like ``jax.nn.initializers.truncated_normal`` and
``torch.nn.init.trunc_normal_``, does not rescale: its realised std is 0.8796 * scale.

``gain=auto`` means the gain ``torch.nn.init.calculate_gain`` recommends for the activation,
divided by the gain the formula already contains (He's sqrt(2)), so ``he_normal`` with ``auto``
equals ``torch.nn.init.kaiming_normal_(nonlinearity=activation)``. Absolute initializers (normal,
uniform, constant, zeros) have no fan to correct, so their ``auto`` gain is 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

# Unit draws. The order is the integer code a trial carries into the compiled call.
DRAWS = ("constant", "normal", "truncated_normal", "uniform", "orthogonal", "delta_orthogonal")
TRUNCATED_NORMAL_STD = 0.87962566103423978  # std of N(0, 1) truncated to [-2, 2]


class Fans(NamedTuple):
    fan_in: float
    fan_out: float


class Initializer(NamedTuple):
    draw: str  # one of DRAWS
    scale: Callable[[Fans, dict], float]  # (fans, init params) -> std, limit or value
    intrinsic_gain: float = 1.0  # gain already inside the formula (He's sqrt(2))
    relative: bool = True  # scale depends on fans, so gain=auto applies
    data_dependent: bool = False  # rescaled on a data batch inside the training call


def _fan(fans: Fans, params: dict) -> float:
    return fans.fan_out if params.get("mode", "fan_in") == "fan_out" else fans.fan_in


_GLOROT_N = Initializer("normal", lambda f, p: math.sqrt(2.0 / (f.fan_in + f.fan_out)))
_GLOROT_U = Initializer("uniform", lambda f, p: math.sqrt(6.0 / (f.fan_in + f.fan_out)))
_HE_N = Initializer("normal", lambda f, p: math.sqrt(2.0 / _fan(f, p)), math.sqrt(2.0))
_HE_U = Initializer("uniform", lambda f, p: math.sqrt(6.0 / _fan(f, p)), math.sqrt(2.0))

INITIALIZERS: dict[str, Initializer] = {
    "zeros": Initializer("constant", lambda f, p: 0.0, relative=False),
    "constant": Initializer("constant", lambda f, p: p["value"], relative=False),
    "normal": Initializer("normal", lambda f, p: p["std"], relative=False),
    "truncated_normal": Initializer("truncated_normal", lambda f, p: p["std"], relative=False),
    "uniform": Initializer("uniform", lambda f, p: p["limit"], relative=False),
    "glorot_normal": _GLOROT_N,
    "xavier_normal": _GLOROT_N,
    "glorot_uniform": _GLOROT_U,
    "xavier_uniform": _GLOROT_U,
    "he_normal": _HE_N,
    "kaiming_normal": _HE_N,
    "he_uniform": _HE_U,
    "kaiming_uniform": _HE_U,
    "lecun_normal": Initializer("normal", lambda f, p: math.sqrt(1.0 / _fan(f, p))),
    "lecun_uniform": Initializer("uniform", lambda f, p: math.sqrt(3.0 / _fan(f, p))),
    "orthogonal": Initializer("orthogonal", lambda f, p: 1.0),
    # For convolutions: a dense (in, out) kernel gets plain orthogonal.
    "delta_orthogonal": Initializer("delta_orthogonal", lambda f, p: 1.0),
    # The orthonormal start; the training call then rescales each layer on the trial's first
    # mini-batch (pipeline.lsuv). gain=auto is 1: LSUV's target variance is already "right".
    "lsuv": Initializer("orthogonal", lambda f, p: 1.0, relative=False, data_dependent=True),
}

BIAS_INITS = ("zeros", "constant", "normal")
FAN_MODES = ("fan_in", "fan_out")


def compute_fans(shape: Sequence[int]) -> Fans:
    """Fans of a dense ``(in, out)`` or convolution ``(*window, in, out)`` kernel.

    For convolutions each input feature is seen through the whole receptive field, so both fans
    are multiplied by the window size (as in ``jax.nn.initializers`` and ``torch.nn.init``).
    """
    if len(shape) < 2:
        raise ValueError(f"an initializer needs a kernel of rank >= 2, got shape {tuple(shape)}")
    receptive = math.prod(shape[:-2])
    return Fans(float(shape[-2] * receptive), float(shape[-1] * receptive))


def resolve_gain(weights: str, gain: float | str, activation: str, negative_slope: float) -> float:
    """The number ``init.gain`` stands for; ``auto`` becomes the activation's recommended gain."""
    if gain != "auto":
        return float(gain)
    from pipeline.activations import recommended_gain

    init = INITIALIZERS[weights]
    if not init.relative:
        return 1.0
    return recommended_gain(activation, negative_slope) / init.intrinsic_gain


def weight_scale(weights: str, fans: Fans, gain: float, params: dict) -> float:
    """Std (normal), limit (uniform), value (constant) or multiplier (orthogonal) of a kernel."""
    return float(INITIALIZERS[weights].scale(fans, params)) * gain


def unit_draw(draw: str, key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """A sample of the unit distribution ``draw`` (scale 1) of the given shape."""
    shape = tuple(shape)
    if draw == "constant":
        return jnp.ones(shape, dtype)
    if draw == "normal":
        return jax.random.normal(key, shape, dtype)
    if draw == "truncated_normal":
        return jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype)
    if draw == "uniform":
        return jax.random.uniform(key, shape, dtype, -1.0, 1.0)
    if draw == "orthogonal":
        return _orthogonal(key, shape, dtype)
    if draw == "delta_orthogonal":
        return _delta_orthogonal(key, shape, dtype)
    raise ValueError(f"unknown draw {draw!r}; allowed: {', '.join(DRAWS)}")


def _orthogonal(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    # Saxe et al. 2013: QR of a Gaussian matrix, signs fixed by diag(R) so Q is Haar-distributed
    # (Mezzadri 2007). Kernels of rank > 2 are flattened to (receptive * in, out), like JAX's.
    n_rows, n_cols = math.prod(shape[:-1]), shape[-1]
    a = jax.random.normal(key, (max(n_rows, n_cols), min(n_rows, n_cols)), jnp.float32)
    q, r = jnp.linalg.qr(a)
    q = q * jnp.sign(jnp.diagonal(r))
    if n_rows < n_cols:
        q = q.T
    return q.reshape(shape).astype(dtype)


def _delta_orthogonal(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    """Xiao et al. 2018 ("Dynamical Isometry and a Mean Field Theory of CNNs", Algorithm 2):
    an orthogonal (in, out) matrix at the centre of the window, zeros elsewhere, so that a
    convolution starts as an orthogonal map at every position: norms are preserved exactly."""
    if len(shape) == 2:
        return _orthogonal(key, shape, dtype)
    centre = tuple(k // 2 for k in shape[:-2])
    kernel = jnp.zeros(shape, dtype)
    return kernel.at[centre].set(_orthogonal(key, shape[-2:], dtype))


def make_initializer(
    weights: str, gain: float, params: dict | None = None
) -> Callable[[jax.Array, Sequence[int], jnp.dtype], jax.Array]:
    """A ``jax.nn.initializers``-style ``(key, shape, dtype) -> array`` for ``kernel_init``.

    >>> init = make_initializer("he_normal", gain=1.0)
    >>> init(jax.random.key(0), (512, 256), jnp.float32).std()  # doctest: +ELLIPSIS
    Array(0.06..., dtype=float32)
    """
    spec = INITIALIZERS[weights]
    if spec.data_dependent:
        raise ValueError(
            f"{weights!r} is data-dependent: initialize with the orthonormal start, then call "
            "pipeline.lsuv.lsuv(params, batch, ...) on a batch of your data"
        )
    params = dict(params or {})

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        scale = weight_scale(weights, compute_fans(shape), gain, params)
        return (scale * unit_draw(spec.draw, key, shape, jnp.float32)).astype(dtype)

    return init


def make_bias_initializer(
    bias: str, value: float = 0.0, std: float = 0.0
) -> Callable[[jax.Array, Sequence[int], jnp.dtype], jax.Array]:
    """A ``(key, shape, dtype) -> array`` bias initializer: zeros, constant or normal."""
    mean, spread = bias_moments(bias, value, std)

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        return (mean + spread * jax.random.normal(key, tuple(shape), jnp.float32)).astype(dtype)

    return init


def bias_moments(bias: str, value: float, std: float) -> tuple[float, float]:
    """(mean, std) of a bias initializer, the two numbers a trial carries into training."""
    return {"zeros": (0.0, 0.0), "constant": (value, 0.0), "normal": (0.0, std)}[bias]


def expected_std(weights: str, shape: Sequence[int], gain: float, params: dict) -> float:
    """The std a kernel of ``shape`` drawn by ``weights`` should have: what the tests check."""
    spec = INITIALIZERS[weights]
    scale = weight_scale(weights, compute_fans(shape), gain, params)
    factor = {
        "constant": 0.0,
        "normal": 1.0,
        "truncated_normal": TRUNCATED_NORMAL_STD,
        "uniform": 1.0 / math.sqrt(3.0),
        "orthogonal": 1.0 / math.sqrt(max(math.prod(shape[:-1]), shape[-1])),
        # one tap of the window is an orthogonal (in, out) matrix, the others are zero
        "delta_orthogonal": 1.0
        / math.sqrt(max(shape[-2], shape[-1]) * math.prod(shape[:-2] or (1,))),
    }[spec.draw]
    return abs(scale) * factor


__all__ = [
    "BIAS_INITS",
    "DRAWS",
    "FAN_MODES",
    "INITIALIZERS",
    "Fans",
    "bias_moments",
    "compute_fans",
    "expected_std",
    "make_bias_initializer",
    "make_initializer",
    "resolve_gain",
    "unit_draw",
    "weight_scale",
]
