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

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import brentq

from pipeline.activations import ACTIVATIONS

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

    def wrap(f):
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


def _pair_mean(f, g, q: float, c: float) -> float:
    """E[f(u1) g(u2)] for u1, u2 ~ N(0, q) with correlation c (2-D Gauss-Hermite)."""
    z, w = _nodes()
    z1, z2 = np.meshgrid(z, z, indexing="ij")
    ww = np.outer(w, w)
    s = math.sqrt(q)
    u1 = s * z1
    u2 = s * (c * z1 + math.sqrt(max(0.0, 1.0 - c * c)) * z2)
    return float(np.sum(ww * f(u1) * g(u2)))


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
    if not math.isfinite(q_star) and activation not in ("relu", "leaky_relu", "identity"):
        nan = math.nan
        return dict(
            q_star=q_star, chi1=nan, c_star=nan, xi_q=0.0, xi_c=0.0, max_trainable_depth=0.0
        )
    z, w = _nodes()
    # At q* = 0 the limit q -> 0+ is what matters (phi'(0+) for ReLU-like activations); when the
    # length grows without bound, the (scale-free) ReLU family is evaluated at a large q.
    q = min(max(q_star, EPS_Q), 1e6)
    u = math.sqrt(q) * z
    chi1 = float(sigma_w2 * np.sum(w * d1(u) ** 2))
    xi_q = _depth_scale(chi1 + sigma_w2 * float(np.sum(w * d2(u) * phi(u))))
    c = 1.0 if chi1 <= 1.0 else 0.5
    if chi1 > 1.0:  # chaotic phase: iterate the correlation map to its fixed point c* < 1
        for _ in range(500):
            new = (sigma_w2 * _pair_mean(phi, phi, q, c) + sigma_b2) / q
            if abs(new - c) < 1e-12:
                break
            c = min(new, 1.0)
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
