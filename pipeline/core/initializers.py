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
                              to output variance gain^2 on data       (``pipeline.core.lsuv``)
normal / truncated_normal     init.std                                seed article's "random"
uniform                       init.limit                              U(-limit, limit)
constant / zeros              init.value / 0                          seed article's zero init
torch_default                 uniform, sqrt(1 / fan_in)               PyTorch nn.Linear/Conv*d:
                                                                      kaiming_uniform_(a=sqrt(5))
flax_default                  truncated normal, realised std          Flax nn.Dense/Conv:
                              sqrt(1 / fan_in) (scale / 0.8796)       lecun_normal() =
                                                                      variance_scaling(1, "fan_in",
                                                                      "truncated_normal")
keras_default                 = glorot_uniform                        Keras Dense/Conv:
                                                                      GlorotUniform, zero bias
============================  ======================================  =============================

The three framework defaults always use ``fan_in`` (whatever ``init.mode`` says), as the
frameworks do; gain 1 is the framework's own draw, and so is ``gain=auto``: a framework default
is defined at its own scale, so ``auto`` resolves to 1 for it as for the absolute initializers
(``torch_default``'s formula does contain torch's gain sqrt(2 / (1 + 5)) = 1/sqrt(3), of
leaky_relu with slope sqrt(5), but ``auto`` does not turn it into kaiming_uniform). Flax
(flax/linen/linear.py ``default_kernel_init``) rescales its truncated normal so that the realised
std is sqrt(1 / fan_in); so does ours here.

Biases (``init.bias``): ``zeros``, ``constant`` (init.bias_value), ``normal`` (init.bias_std),
``torch_default`` and ``auto``. A bias is mean + std * unit, the unit draw of std 1 made from
one standard normal z per element (``bias_draw`` says which, ``bias_unit`` makes it): z itself,
or for PyTorch's default bias U(+-1/sqrt(fan_in)) (std 1/sqrt(3 fan_in)) the uniform
sqrt(3) * (2 Phi(z) - 1) ~ U(-sqrt(3), sqrt(3)), so that the training call,
``make_bias_initializer`` and ``pipeline.reuse.best.init_params`` all draw PyTorch's exact
distribution, the same numbers from the same normal draw.
``auto`` is the framework default that goes with ``init.weights``: torch's bias for
``torch_default``, zeros for everything else (Flax's and Keras' default).

``fan`` is ``fan_in`` or ``fan_out`` as ``init.mode`` says (He and LeCun only). Truncated normal
cuts at two standard deviations and, like ``jax.nn.initializers.truncated_normal`` and
``torch.nn.init.trunc_normal_``, does not rescale: its realised std is 0.8796 * scale.

``gain=auto`` means the gain ``torch.nn.init.calculate_gain`` recommends for the activation,
divided by the gain the formula already contains (He's sqrt(2)), so ``he_normal`` with ``auto``
equals ``torch.nn.init.kaiming_normal_(nonlinearity=activation)``. Absolute initializers (normal,
uniform, constant, zeros) have no fan to correct, so their ``auto`` gain is 1; so is the
framework defaults' (``FRAMEWORK_DEFAULTS``), which are defined at their framework's own scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.special
import numpy as np

from pipeline.core.names import (  # noqa: F401 (initializers.BIAS_INITS, FAN_MODES)
    BIAS_INITS,
    FAN_MODES,
    FRAMEWORK_DEFAULTS,
    INITIALIZER_NAMES,
    check_registry,
)

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


# The variance-scaling initializers as data (the table above; the exports read it too):
# name -> (factor, fan), the draw's variance factor * gain^2 / fan, so a normal's std is
# sqrt(factor / fan) and a uniform's limit sqrt(3 factor / fan) before the gain. fan None:
# init.mode's (fan_in or fan_out); fan_avg: (fan_in + fan_out) / 2.
VARIANCE_SCALING: dict[str, tuple[float, str | None]] = {
    "glorot_normal": (1.0, "fan_avg"),  # Glorot & Bengio 2010: 2 / (fan_in + fan_out)
    "xavier_normal": (1.0, "fan_avg"),
    "glorot_uniform": (1.0, "fan_avg"),
    "xavier_uniform": (1.0, "fan_avg"),
    "he_normal": (2.0, None),  # He et al. 2015: 2 / fan
    "kaiming_normal": (2.0, None),
    "he_uniform": (2.0, None),
    "kaiming_uniform": (2.0, None),
    "lecun_normal": (1.0, None),  # LeCun et al. 1998: 1 / fan
    "lecun_uniform": (1.0, None),
    # Framework defaults, always fan_in (fan_avg for Glorot):
    "torch_default": (1.0 / 3.0, "fan_in"),  # kaiming_uniform_(a=sqrt(5)): gain^2 1/3
    "flax_default": (1.0, "fan_in"),  # lecun_normal, truncated and rescaled
    "keras_default": (1.0, "fan_avg"),  # glorot_uniform
}


def _fan_of(fan: str | None, fans: Fans, params: dict) -> float:
    if fan == "fan_avg":
        return (fans.fan_in + fans.fan_out) / 2
    return fans.fan_in if fan == "fan_in" else _fan(fans, params)


def _variance_scaled(name: str, draw: str, intrinsic_gain: float = 1.0) -> Initializer:
    """``VARIANCE_SCALING[name]`` drawn as ``draw``: a uniform's limit is sqrt(3) stds, and a
    truncated normal is rescaled so that its realised std is the formula's (Flax's default)."""
    factor, fan = VARIANCE_SCALING[name]
    numerator = 3.0 * factor if draw == "uniform" else factor
    rescale = TRUNCATED_NORMAL_STD if draw == "truncated_normal" else 1.0
    return Initializer(
        draw, lambda f, p: math.sqrt(numerator / _fan_of(fan, f, p)) / rescale, intrinsic_gain
    )


_GLOROT_N = _variance_scaled("glorot_normal", "normal")
_GLOROT_U = _variance_scaled("glorot_uniform", "uniform")
_HE_N = _variance_scaled("he_normal", "normal", math.sqrt(2.0))
_HE_U = _variance_scaled("he_uniform", "uniform", math.sqrt(2.0))

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
    "lecun_normal": _variance_scaled("lecun_normal", "normal"),
    "lecun_uniform": _variance_scaled("lecun_uniform", "uniform"),
    "orthogonal": Initializer("orthogonal", lambda f, p: 1.0),
    # For convolutions: a dense (in, out) kernel gets plain orthogonal.
    "delta_orthogonal": Initializer("delta_orthogonal", lambda f, p: 1.0),
    # The orthonormal start; the training call then rescales each layer on the trial's first
    # mini-batch (pipeline.core.lsuv). gain=auto is 1: LSUV's target variance is already "right".
    "lsuv": Initializer("orthogonal", lambda f, p: 1.0, relative=False, data_dependent=True),
    # Framework defaults (always fan_in): gain 1 is exactly what the framework draws.
    "torch_default": _variance_scaled("torch_default", "uniform", 1.0 / math.sqrt(3.0)),
    "flax_default": _variance_scaled("flax_default", "truncated_normal"),
    "keras_default": _GLOROT_U,
}
check_registry(INITIALIZERS, INITIALIZER_NAMES)  # the schema checks values against the names

# init.bias=auto: the bias each framework's layers start from with these weights.
FRAMEWORK_BIAS = {"torch_default": "torch_default"}


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
    from pipeline.core.activations import recommended_gain

    init = INITIALIZERS[weights]
    if not init.relative or weights in FRAMEWORK_DEFAULTS:  # defined at their own scale
        return 1.0
    return recommended_gain(activation, negative_slope) / init.intrinsic_gain


def weight_scale(weights: str, fans: Fans, gain: float, params: dict) -> float:
    """Std (normal), limit (uniform), value (constant) or multiplier (orthogonal) of a kernel."""
    return float(INITIALIZERS[weights].scale(fans, params)) * gain


# Draws that are finished by a QR decomposition after their Gaussian is sampled.
ORTHOGONAL_DRAWS = ("orthogonal", "delta_orthogonal")


def unit_draw(draw: str, key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
    """A sample of the unit distribution ``draw`` (scale 1) of the given shape."""
    shape = tuple(shape)
    return finish_draw(draw, raw_draw(draw, key, shape), len(shape), jnp).astype(dtype)


def raw_source(draw: str) -> str:
    """The draw whose numbers ``raw_draw(draw)`` returns: the orthogonal draws start from the
    normal draw's (same key, same shape: the same numbers)."""
    return "normal" if draw in ORTHOGONAL_DRAWS else draw


def raw_draw(draw: str, key: jax.Array, shape: Sequence[int]) -> jax.Array:
    """The random numbers a unit draw starts from: the draw itself, or for the orthogonal
    draws the Gaussian of the kernel's shape that ``finish_draw`` orthonormalizes."""
    shape = tuple(shape)
    if draw == "constant":
        return jnp.ones(shape, jnp.float32)
    if raw_source(draw) == "normal":
        return jax.random.normal(key, shape, jnp.float32)
    if draw == "truncated_normal":
        return jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32)
    if draw == "uniform":
        return jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0)
    raise ValueError(f"unknown draw {draw!r}; allowed: {', '.join(DRAWS)}")


def finish_draw(draw: str, a, rank: int, xp=np):
    """``raw_draw``'s numbers made into the unit draw; ``a`` holds kernels of rank ``rank`` in
    its last axes, behind any batch axes. ``xp`` is ``numpy`` (on the host) or ``jax.numpy``.

    The engine finishes its draws with NumPy on the host, never inside an XLA executable: a
    batched QR runs as a LAPACK custom call whose ``ParallelBatchMap`` waits on tasks queued
    on XLA's CPU thread pool from inside that pool, and when every pool thread did so at once
    the call never returned (``python -m pipeline train ... init.weights=orthogonal
    train.seeds=5`` wedged 4 of 5 cold runs on 2 cores; jaxlib 0.10.2).
    """
    if draw not in ORTHOGONAL_DRAWS:
        return a
    kernel = a.shape[a.ndim - rank :]
    if draw == "delta_orthogonal" and rank > 2:
        # Xiao et al. 2018 ("Dynamical Isometry and a Mean Field Theory of CNNs", Algorithm 2):
        # an orthogonal (in, out) matrix at the centre of the window, zeros elsewhere, so that
        # a convolution starts as an orthogonal map at every position: norms are preserved.
        centre = (Ellipsis, *(k // 2 for k in kernel[:-2]), slice(None), slice(None))
        taps = _haar(a[centre], xp)
        if xp is np:
            out = np.zeros_like(a)
            out[centre] = taps
            return out
        return jnp.zeros_like(a).at[centre].set(taps)
    # Kernels of rank > 2 are flattened to (receptive * in, out), like JAX's orthogonal.
    flat = a.reshape(*a.shape[: a.ndim - rank], math.prod(kernel[:-1]), kernel[-1])
    return _haar(flat, xp).reshape(a.shape)


def _haar(a, xp):
    """Orthonormal columns (rows, if wider than tall) from Gaussian matrices ``(..., r, c)``.

    Saxe et al. 2013: QR of a Gaussian matrix, signs fixed by diag(R) so that Q is
    Haar-distributed (Mezzadri 2007, "How to generate random matrices from the classical
    compact groups", section 5).
    """
    if a.shape[-2] < a.shape[-1]:
        return xp.swapaxes(_haar(xp.swapaxes(a, -1, -2), xp), -1, -2)
    q, r = xp.linalg.qr(a)
    return q * xp.sign(xp.diagonal(r, axis1=-2, axis2=-1))[..., None, :]


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
            "pipeline.core.lsuv.lsuv(params, batch, ...) on a batch of your data"
        )
    params = dict(params or {})

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        scale = weight_scale(weights, compute_fans(shape), gain, params)
        return (scale * unit_draw(spec.draw, key, shape, jnp.float32)).astype(dtype)

    return init


def make_bias_initializer(
    bias: str,
    value: float = 0.0,
    std: float = 0.0,
    fan_in: float | None = None,
    weights: str = "",
) -> Callable[[jax.Array, Sequence[int], jnp.dtype], jax.Array]:
    """A ``(key, shape, dtype) -> array`` bias initializer, drawn as training draws it (the
    bias's mean plus its std times ``bias_unit`` of a standard normal: PyTorch's uniform for
    ``torch_default``, the numbers the training call makes of the same normal draw); ``fan_in``
    is the layer's, for ``torch_default``."""
    if resolve_bias(bias, weights) == "torch_default" and fan_in is None:
        raise ValueError("init.bias=torch_default needs the layer's fan_in")
    mean, spread = bias_moments(bias, value, std, fan_in, weights)
    draw = bias_draw(bias, weights)

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        z = jax.random.normal(key, tuple(shape), jnp.float32)
        return (mean + spread * bias_unit(draw, z)).astype(dtype)

    return init


def resolve_bias(bias: str, weights: str) -> str:
    """The bias initializer ``init.bias`` stands for; ``auto`` is the weights' framework's."""
    return FRAMEWORK_BIAS.get(weights, "zeros") if bias == "auto" else bias


def torch_bias_std(fan_in: float) -> float:
    """Std of PyTorch's default bias U(+-1/sqrt(fan_in)) (torch.nn.Linear.reset_parameters)."""
    return 1.0 / math.sqrt(3.0 * fan_in)


# The unit draws of a bias (std 1, one standard normal per element made into it: bias_unit).
BIAS_DRAWS = ("normal", "uniform")


def bias_draw(bias: str, weights: str = "") -> str:
    """The unit draw of bias initializer ``bias`` (``auto`` resolved with ``weights``):
    ``uniform`` for PyTorch's default bias, ``normal`` for every other.

    PyTorch initializes a Linear/Conv*d bias with ``init.uniform_(bias, -bound, bound)``, bound
    1/sqrt(fan_in) (``torch.nn.Linear.reset_parameters``, likewise
    ``torch.nn.modules.conv._ConvNd.reset_parameters``): uniform, std 1/sqrt(3 fan_in)
    (``torch_bias_std``), not a normal."""
    return "uniform" if resolve_bias(bias, weights) == "torch_default" else "normal"


def uniform_from_normal(z):
    """U(-sqrt(3), sqrt(3)), std 1, from standard normals ``z``: sqrt(3) * (2 Phi(z) - 1), Phi
    the standard normal CDF, computed as sqrt(3) * erf(z / sqrt(2)) (the same function, without
    the cancellation of 2 Phi(z) - 1 near 0). Phi(z) is U(0, 1) (the probability integral
    transform), so this is exactly uniform and never leaves +-sqrt(3); times 1/sqrt(3 fan_in) it
    is PyTorch's default bias U(+-1/sqrt(fan_in))."""
    return math.sqrt(3.0) * jax.scipy.special.erf(z * (1.0 / math.sqrt(2.0)))


def bias_unit(draw: str, z):
    """The unit draw ``draw`` (one of ``BIAS_DRAWS``) of a bias, from its standard normal draw
    ``z``; the bias is ``mean + std * bias_unit(draw, z)``. The training call carries the choice
    as a traced bool per bias leaf (``Hparams.bias_uniform``) and takes
    ``jnp.where(uniform, uniform_from_normal(z), z)``: the same numbers."""
    if draw == "normal":
        return z
    if draw == "uniform":
        return uniform_from_normal(z)
    raise ValueError(f"unknown bias draw {draw!r}; allowed: {', '.join(BIAS_DRAWS)}")


def bias_moments(
    bias: str, value: float, std: float, fan_in: float | None = None, weights: str = ""
) -> tuple[float, float]:
    """(mean, std) of a bias initializer, the two numbers a trial carries into training.

    ``torch_default`` needs the layer's ``fan_in``; a caller that does not know it gets std 0,
    the limit of 1/sqrt(3 fan_in) for wide layers (0.07 at fan_in 64: sigma_b^2 = 0.005)."""
    bias = resolve_bias(bias, weights)
    if bias == "torch_default":
        return 0.0, 0.0 if fan_in is None else torch_bias_std(fan_in)
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
    "BIAS_DRAWS",
    "BIAS_INITS",
    "DRAWS",
    "FAN_MODES",
    "FRAMEWORK_BIAS",
    "FRAMEWORK_DEFAULTS",
    "INITIALIZERS",
    "Fans",
    "bias_draw",
    "bias_moments",
    "bias_unit",
    "compute_fans",
    "expected_std",
    "finish_draw",
    "make_bias_initializer",
    "make_initializer",
    "raw_draw",
    "resolve_bias",
    "resolve_gain",
    "torch_bias_std",
    "uniform_from_normal",
    "unit_draw",
    "weight_scale",
]
