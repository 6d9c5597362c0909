"""Mean-field signal propagation in wide random networks, next to what a trial measures.

For a network with weights ~ N(0, sigma_w2 / fan_in) and biases ~ N(0, sigma_b2), in the limit of
infinite width (Poole et al. 2016, "Exponential expressivity in deep neural networks through
transient chaos"; Schoenholz et al. 2017, "Deep Information Propagation"):

- length map  q_l = sigma_w2 E[phi(sqrt(q_{l-1}) z)^2] + sigma_b2, fixed point q*;
- chi1 = sigma_w2 E[phi'(sqrt(q*) z)^2]: the slope of the correlation map at c = 1. chi1 < 1 is
  the ordered phase (gradients vanish), chi1 > 1 the chaotic one (they explode), chi1 = 1 the
  edge of chaos;
- correlation map c_l = (sigma_w2 E[phi(u1) phi(u2)] + sigma_b2) / q*, u1 = sqrt(q*) z1,
  u2 = sqrt(q*) (c z1 + sqrt(1 - c^2) z2), fixed point c*;
- depth scales xi_q = -1 / ln(chi1 + sigma_w2 E[phi''(u) phi(u)]) and
  xi_c = -1 / ln(sigma_w2 E[phi'(u1) phi'(u2)] at c*) (Schoenholz et al. eqs. 5 and 9);
- networks train up to a depth of about 6 xi_c (Schoenholz et al., Fig. 5).

Expectations over Gaussians use Gauss-Hermite quadrature (probabilists' Hermite nodes), in
float64. Infinite depth scales (exactly critical) are returned as ``inf``.
"""

from __future__ import annotations

import math
from functools import cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import brentq

from pipeline.core.activations import ACTIVATIONS

N_NODES = 80  # even: no node at 0, where ReLU-like derivatives jump
EPS_Q = 1e-12


@cache
def _nodes(n: int = N_NODES) -> tuple[np.ndarray, np.ndarray]:
    z, w = np.polynomial.hermite_e.hermegauss(n)
    return z, w / math.sqrt(2.0 * math.pi)  # E[f(z)] = sum w f(z), z ~ N(0, 1)


@cache
def _derivatives(activation: str, slope: float):
    """phi, phi', phi'' as float64 numpy functions."""
    fn = ACTIVATIONS[activation].fn

    def phi(x):
        return fn(x, slope)

    d1 = jax.vmap(jax.grad(phi))
    d2 = jax.vmap(jax.grad(jax.grad(phi)))
    # jit: eager grad-of-vmap retraces on every call, which made one chaotic-phase evaluation
    # cost ~0.2 s; the grids have two fixed shapes, so each compiles twice and then runs in us.

    def wrap(f):
        f = jax.jit(f)

        def run(x: np.ndarray) -> np.ndarray:
            with jax.enable_x64(True):
                flat = jnp.asarray(np.ravel(x), jnp.float64)
                return np.asarray(f(flat), np.float64).reshape(np.shape(x))

        return run

    return wrap(jax.vmap(phi)), wrap(d1), wrap(d2)


def _q_star(phi, sigma_w2: float, sigma_b2: float) -> float:
    """Fixed point of the length map by bracketing; 0 when the signal dies out (sigma_b2 = 0
    in the ordered phase), inf when it grows without bound."""
    z, w = _nodes()

    def gap(q: float) -> float:
        return sigma_w2 * float(np.sum(w * phi(math.sqrt(q) * z) ** 2)) + sigma_b2 - q

    if abs(gap(1.0)) < 1e-9:  # e.g. ReLU at sigma_w2 = 2: every length is a fixed point
        return 1.0
    if gap(EPS_Q) <= 0.0:
        return 0.0
    high = 1.0
    while gap(high) > 0.0:
        high *= 4.0
        if high > 1e12:
            return math.inf
    return float(brentq(gap, EPS_Q, high, xtol=1e-14, rtol=1e-12))


def _pair_means(f, g, q: float, cs: np.ndarray) -> np.ndarray:
    """E[f(u1) g(u2)] for u1, u2 ~ N(0, q) with each correlation in ``cs`` (2-D Gauss-Hermite,
    every correlation in one evaluation of ``g``)."""
    z, w = _nodes()
    z1, z2 = np.meshgrid(z, z, indexing="ij")
    ww = np.outer(w, w)
    s = math.sqrt(q)
    cs = np.asarray(cs, float)[:, None, None]
    u2 = s * (cs * z1 + np.sqrt(np.maximum(0.0, 1.0 - cs * cs)) * z2)
    return np.sum(ww * f(s * z1) * g(u2), axis=(1, 2))


def _pair_mean(f, g, q: float, c: float) -> float:
    return float(_pair_means(f, g, q, np.array([c]))[0])


def _depth_scale(rate: float) -> float:
    """Layers over which a perturbation shrinks (rate < 1) or grows (rate > 1) by a factor e."""
    if not math.isfinite(rate) or rate <= 0:
        return 0.0
    return math.inf if abs(math.log(rate)) < 1e-12 else 1.0 / abs(math.log(rate))


def signal_propagation(
    activation: str, sigma_w2: float, sigma_b2: float, negative_slope: float = 0.01
) -> dict[str, float]:
    """``q_star``, ``chi1``, ``c_star``, ``xi_q``, ``xi_c``, ``max_trainable_depth``."""
    phi, d1, d2 = _derivatives(activation, negative_slope)
    q_star = _q_star(phi, sigma_w2, sigma_b2)
    z, w = _nodes()
    # At q* = 0 the limit q -> 0+ is what matters (phi'(0+) for ReLU-like activations); when the
    # length grows without bound (only unbounded activations), the asymptotic regime is
    # evaluated at a large q: exact for the scale-free ReLU family, the limit for GELU/SiLU/ELU.
    q = min(max(q_star, EPS_Q), 1e6)
    u = math.sqrt(q) * z
    chi1 = float(sigma_w2 * np.sum(w * d1(u) ** 2))
    xi_q = _depth_scale(chi1 + sigma_w2 * float(np.sum(w * d2(u) * phi(u))))
    c = 1.0
    if chi1 > 1.0:  # chaotic phase: the correlation map has a stable fixed point c* < 1

        def gaps_at(cs: np.ndarray) -> np.ndarray:
            return (sigma_w2 * _pair_means(phi, phi, q, cs) + sigma_b2) / q - cs

        # c = 1 is an unstable fixed point (slope chi1 > 1), so gap < 0 just below it; the
        # stable c* is the last place below 1 where gap falls through zero. Scan a grid first:
        # with sigma_b2 = 0 and an odd activation c* = 0 exactly, where gap's sign is rounding
        # noise that a single bracket test would misread.
        grid = np.linspace(-1.0, 1.0 - 1e-6, 41)
        gaps = gaps_at(grid)
        falls = np.flatnonzero((gaps[:-1] >= -1e-12) & (gaps[1:] < -1e-12))
        if falls.size:
            i = falls[-1]
            a, b = grid[i], grid[i + 1]
            if gaps[i] <= 1e-12:
                c = a
            else:
                c = float(brentq(lambda c: float(gaps_at(np.array([c]))[0]), a, b, xtol=1e-12))
    chi_c = sigma_w2 * _pair_mean(d1, d1, q, c)
    xi_c = _depth_scale(chi_c)
    return dict(
        q_star=q_star,
        chi1=chi1,
        c_star=float(c),
        xi_q=xi_q,
        xi_c=xi_c,
        max_trainable_depth=6.0 * xi_c,
    )


def critical_sigma_w2(
    activation: str,
    sigma_b2: float,
    negative_slope: float = 0.01,
    low: float = 0.05,
    high: float = 20.0,
) -> float:
    """The sigma_w2 at which chi1 = 1 (the edge of chaos) for this sigma_b2."""

    def gap(sw2: float) -> float:
        return signal_propagation(activation, sw2, sigma_b2, negative_slope)["chi1"] - 1.0

    return float(brentq(gap, low, high, xtol=1e-10))


class _Shapes(NamedTuple):
    width: int
    kind: str
    n_in: int = 1
    n_classes: int = 1


def trial_variances(trial: dict) -> tuple[float, float] | None:
    """(sigma_w2, sigma_b2) of a trial's hidden layers, from its flat config; None where the
    mean-field picture does not apply (constant weights: every unit is the same unit) or the
    variance is only known after seeing data (LSUV).

    sigma_w2 = fan_in x Var(W) of a hidden kernel (fan_in = 9 x channels for a CNN, whose mean
    field is the same as a dense network's, Xiao et al. 2018), so orthogonal with gain g
    gives g^2 like a Gaussian of the same variance (Saxe et al. 2013 differ only beyond the
    mean field). A constant bias enters as sigma_b2 = value^2: it is shared by every input
    like a random bias is, though it also shifts the mean, which the mean field ignores.
    """
    from pipeline.core.initializers import INITIALIZERS, bias_moments, expected_std, resolve_gain

    weights = trial["init.weights"]
    if INITIALIZERS[weights].draw == "constant" or INITIALIZERS[weights].data_dependent:
        return None
    from pipeline.core.model import layer_shapes

    width = int(trial["model.width"])
    kind = trial.get("model.kind", "mlp")
    shape = layer_shapes(_Shapes(width, kind))["hidden"]  # (w, w), or (3, 3, w, w) for a CNN
    gain = resolve_gain(
        weights, trial["init.gain"], trial["model.activation"], trial["model.negative_slope"]
    )
    params = {k: trial[f"init.{k}"] for k in ("mode", "std", "limit", "value")}
    std = expected_std(weights, shape, gain, params)
    fan_in = math.prod(shape[:-1])
    mean, bias_std = bias_moments(
        trial["init.bias"], trial["init.bias_value"], trial["init.bias_std"]
    )
    return fan_in * std * std, bias_std * bias_std + mean * mean


@cache
def cached_propagation(activation: str, sigma_w2: float, sigma_b2: float, slope: float) -> dict:
    return signal_propagation(activation, sigma_w2, sigma_b2, slope)


def trial_prediction(trial: dict) -> dict[str, float]:
    """What theory predicts for a trial before it trains, as ``theory.*`` metrics (empty where
    it does not apply). Variances are rounded to 4 significant digits so sweeps reuse results."""
    variances = trial_variances(trial)
    if variances is None:
        return {}
    sw2, sb2 = (float(f"{v:.4g}") for v in variances)
    p = cached_propagation(
        trial["model.activation"], sw2, sb2, float(trial["model.negative_slope"])
    )
    return {
        "theory.sigma_w2": sw2,
        "theory.sigma_b2": sb2,
        "theory.chi1": p["chi1"],
        "theory.xi_c": p["xi_c"],
        "theory.max_trainable_depth": p["max_trainable_depth"],
    }
