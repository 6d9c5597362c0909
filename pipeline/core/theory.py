"""Mean-field signal propagation in wide random networks: the math, in sigma_w2, sigma_b2, depth
and activation names (what a trial's config means here is ``pipeline.core.predict``'s).

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

import importlib
import math
from functools import cache
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import brentq

from pipeline.core.activations import ACTIVATIONS
from pipeline.core.residual import (  # noqa: F401 (theory.RESIDUAL_RULES, ...: the names users call)
    INIT_RESIDUALS,
    NORMS,
    RESIDUAL_RULES,
    RESIDUALS,
    ResidualScales,
    embedding_var,
    residual_scales,
)

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
    # Compiled ahead of time, once per input length: eager grad-of-vmap retraces on every call
    # (one chaotic-phase evaluation cost ~0.2 s), and a jitted call's dispatch took ~80 us
    # against ~12 us for the compiled executable's, over the ~4,000 calls of two root finds.

    def wrap(f):
        f = jax.jit(f)
        executables = {}

        def run(x: np.ndarray) -> np.ndarray:
            flat = np.ascontiguousarray(np.ravel(x), np.float64)
            with jax.enable_x64(True):
                exe = executables.get(flat.size)
                if exe is None:
                    shape = jax.ShapeDtypeStruct(flat.shape, jnp.float64)
                    exe = executables[flat.size] = f.lower(shape).compile()
                return np.asarray(exe(flat), np.float64).reshape(np.shape(x))

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


@cache
def cached_propagation(activation: str, sigma_w2: float, sigma_b2: float, slope: float) -> dict:
    """``signal_propagation``, once per argument tuple: a sweep's trials share a few variances."""
    return signal_propagation(activation, sigma_w2, sigma_b2, slope)


# --- Residual streams (issue 13) ------------------------------------------------------------
#
# A stack of ``depth`` = L blocks on a stream x of width n:
#     u_{l+1} = a x_l + alpha B(x_l),   B(x) = W2 phi(W1 N(x) + b1) + b2,
#     x_{l+1} = u_{l+1}, or LayerNorm(u_{l+1}) with post-norm,
# with W1, W2 ~ N(0, sigma_w2 s / n) (s the rule's factor, ``pipeline.core.residual``) and biases
# ~ N(0, sigma_b2).


class ResidualPrediction(NamedTuple):
    """The residual stream at initialization in the infinite-width limit."""

    stream_var: np.ndarray  # (L+1,) q_l, mean square of a coordinate of x_l; q_0 the input's
    sum_var: np.ndarray  # (L,) mean square of u_{l+1} = skip x_l + alpha B(x_l) (pre-LayerNorm)
    branch_ratio: np.ndarray  # (L,) Var(alpha B(x_l)) / Var(skip x_l)
    identity_share: float  # share of Var(u_L) carried from x_0 along the identity path alone
    stream_var_ratio: float  # sum_var[-1] / q_0: q_L / q_0 without post-norm


def _mean_square(phi, q: float) -> float:
    """E[phi(sqrt(q) z)^2], z ~ N(0, 1): the length map of one layer (Poole et al. 2016)."""
    z, w = _nodes()
    return float(np.sum(w * phi(math.sqrt(max(q, 0.0)) * z) ** 2))


def _branch_var(phi, q_in: float, sigma1_2: float, sigma2_2: float, sigma_b2: float) -> float:
    """Mean square of B(x) for an input of mean square q_in: two length maps, the second layer
    without activation. B is Gaussian in the limit, whatever phi is (Neal 1996; Lee et al. 2018)."""
    return sigma2_2 * _mean_square(phi, sigma1_2 * q_in + sigma_b2) + sigma_b2


def branch_var(
    activation: str,
    q_in: float,
    sigma1_2: float,
    sigma2_2: float,
    sigma_b2: float = 0.0,
    slope: float = 0.01,
) -> float:
    """``_branch_var`` for an activation by name: a branch's mean square for an input of mean
    square ``q_in``, e.g. a post-norm transformer's last MLP on its LayerNorm-ed input."""
    phi, _, _ = _derivatives(activation, slope)
    return _branch_var(phi, q_in, sigma1_2, sigma2_2, sigma_b2)


def _check_residual_norm(residual: str, norm: str, activation: str) -> None:
    """One-line errors naming the allowed values; deepnorm is defined for post-norm only."""
    if residual not in RESIDUAL_RULES:
        raise ValueError(f"init.residual={residual!r}: expected one of {', '.join(RESIDUALS)}")
    if norm not in NORMS:
        raise ValueError(f"model.norm={norm!r}: expected one of {', '.join(NORMS)}")
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"model.activation={activation!r}: expected one of {', '.join(ACTIVATIONS)}"
        )
    if residual == "t_fixup":  # the transformer's constants (predict.transformer_prediction)
        raise ValueError("init.residual='t_fixup' is a transformer rule, not a residual MLP's")
    if residual == "deepnorm" and norm != "post":
        # Without the LayerNorm after the sum, the up-weighted skip a = (2L)^(1/4) > 1 would grow
        # the stream like a^(2L); DeepNet is a post-LN rule (Wang et al. 2022, Sec. 2).
        raise ValueError("init.residual='deepnorm' needs model.norm='post' (DeepNorm is post-LN)")


def residual_stream(
    depth: int,
    residual: str,
    norm: str,
    activation: str,
    sigma_w2: float,
    sigma_b2: float = 0.0,
    slope: float = 0.01,
    q0: float = 1.0,
    branch: float = 1.0,
) -> ResidualPrediction:
    """Variance of a residual stream, block by block, at initialization and infinite width.

    The branch output W2 phi(...) has zero mean and W2 is independent of x_l, so the branch is
    uncorrelated with the stream and variances add (Hanin & Rolnick 2018, "How to start
    training: the effect of initialization and architecture"; Yang & Schoenholz 2017, "Mean
    field residual networks: on the edge of chaos"):

        T_{l+1} = a^2 q_l + alpha^2 V(q_in),
        V(q) = s2 sigma_w2 E[phi(sqrt(s1 sigma_w2 q + sigma_b2) z)^2] + sigma_b2,

    q_in = q_l without norm, 1 with ``pre`` (LayerNorm) or ``rmsnorm`` on the branch input, and
    q_{l+1} = T_{l+1} except with ``post``, where the LayerNorm resets q_{l+1} = 1.

    - ``none``: a ReLU branch at He (sigma_w2 = 2) has V = sigma_w2^2 q / 2 = 2 q, so
      q_L = 3^L q_0; a variance-preserving branch (V = q, e.g. identity phi at sigma_w2 = 1)
      gives 2^L q_0. ``scaled`` (alpha^2 = 1/L): (1 + V/(qL))^L -> e^(V/q), e.g. e^2 for ReLU+He.
      ``fixup`` (W2 = 0, Zhang et al. 2019) and ``skipinit``/``rezero`` (alpha = 0, De & Smith
      2020; Bachlechner et al. 2020): q_L = q_0 exactly (fixup: + L sigma_b2 with random b2).
    - ``pre``/``rmsnorm``: the branch sees unit mean square, so V = c is a constant and growth
      is additive, q_L = q_0 + L alpha^2 c (Xiong et al. 2020, "On layer normalization in the
      transformer architecture"): c = 2 for ReLU+He; ``scaled`` gives q_0 + c, ``gpt2`` (W2
      variance / 2L) q_0 + c / 2 at sigma_b2 = 0.
    - ``post``: x_l has unit mean square after the first block; ``sum_var`` is what each
      LayerNorm divides out, 1 + alpha^2 c (3 for ReLU+He), and ``identity_share`` falls like
      (1 + alpha^2 c)^-L, the vanishing identity path of post-LN (Xiong et al. 2020).
      ``deepnorm``: a^2 + V = sqrt(2L) + 2 beta^4 = sqrt(2L) + 1/(4L) for ReLU+He
      (Wang et al. 2022), branch/skip ratio 1 / (4L sqrt(2L)).

    ``branch`` multiplies alpha: ``init.parametrization=depth_mup``'s 1/sqrt(L / L_base)
    (``predict.trial_branch_multiplier``), so alpha^2 above becomes alpha^2 L_base / L; e.g.
    pre-norm ReLU+He at L_base = 4 gives q_L = q_0 + 2 L_base whatever L, and ``none``
    (1 + 2 L_base/L)^L -> e^(2 L_base) (Tensor Programs VI's 1/sqrt(L) branches keep the stream
    bounded in depth).

    ``stream_var_ratio`` is sum_var[-1] / q_0: q_L / q_0 without post-norm; with it, the
    variance entering the last LayerNorm over the input's (the normalized stream is 1 by
    construction). ``identity_share`` = prod_l a^2 q_l / T_{l+1}, which is q_0 / q_L without
    post-norm. LayerNorm's epsilon and its mean subtraction (O(1/n) at init) are neglected.
    """
    _check_residual_norm(residual, norm, activation)
    scales = residual_scales(residual, depth)
    phi, _, _ = _derivatives(activation, slope)
    s1, s2 = scales.w1_var * sigma_w2, scales.w2_var * sigma_w2
    alpha2 = (scales.alpha * branch) ** 2
    q = [float(q0)]
    sums, ratios, share = [], [], 1.0
    for _ in range(int(depth)):
        q_in = q[-1] if norm in ("none", "post") else 1.0
        branch_var = alpha2 * _branch_var(phi, q_in, s1, s2, sigma_b2)
        skip = scales.skip**2 * q[-1]
        sums.append(skip + branch_var)
        ratios.append(branch_var / skip if skip > 0 else math.inf)
        share *= skip / sums[-1] if sums[-1] > 0 else 1.0
        q.append(1.0 if norm == "post" else sums[-1])
    return ResidualPrediction(
        stream_var=np.array(q),
        sum_var=np.array(sums),
        branch_ratio=np.array(ratios),
        identity_share=share,
        stream_var_ratio=sums[-1] / q0,
    )


@cache
def cached_stream_ratio(
    depth: int,
    residual: str,
    norm: str,
    activation: str,
    sw2: float,
    sb2: float,
    slope: float,
    branch: float = 1.0,
) -> float:
    """``residual_stream(...).stream_var_ratio``: q_0 = 1, as the built-in stream enters its
    first block normalized (``pipeline.core.model``)."""
    return residual_stream(
        depth, residual, norm, activation, sw2, sb2, slope, branch=branch
    ).stream_var_ratio


# --- The transformer at initialization (issue 13) ---------------------------------------------
#
# ``pipeline.core.transformer``: x_0 = E[tokens] + P[positions], each table N(0, s^2) per entry
# (s = init.embedding_std, times T-Fixup's factor), then per block an attention and an MLP
# branch, u = skip x + alpha B(N(x)). At infinite width distinct rows of the tables are
# independent, so every position enters with mean square q_0 = 2 s^2.


def attention_logit_std(
    head_dim: int, scale: float, sigma_w2: float, sigma_b2: float = 0.0, q_in: float = 1.0
) -> float:
    """Std of the attention logits scale q.k at initialization, for inputs of mean square
    ``q_in`` and query/key weights of variance sigma_w2 / fan_in, biases of variance sigma_b2.

    Each coordinate of q = W_q x + b_q has variance v = sigma_w2 q_in + sigma_b2, likewise k's,
    and q, k are independent (different weights), so E[(q.k)^2] = sum_a E[q_a^2] E[k_a^2] =
    d v^2: q.k has std sqrt(d) v, the logit scale sqrt(d) v. Vaswani et al. 2017 (sec. 3.2.1,
    footnote 4) make this argument for unit-variance q, k (variance d) to motivate 1/sqrt(d):
    the logits then have std v whatever d; with 1/d (muP, Yang et al. 2022) v / sqrt(d) -> 0,
    uniform attention at init; with no scale sqrt(d) v, nearly one-hot softmax rows. Exact for
    zero-mean biases (a bias mean would shift the logits: this is then their root mean square).
    """
    return scale * math.sqrt(head_dim) * (sigma_w2 * q_in + sigma_b2)


ATTENTION_ROWS = 8192  # softmax rows drawn per expectation in ``attention_overlaps``
ATTENTION_SEED = 0


@cache
def attention_overlaps(
    tokens: int, head_dim: int, scale: float, var: float, cov: float
) -> tuple[float, float]:
    """(E[sum_j p_ij^2], E[sum_j p_ij p_kj] for i != k) of one head's attention weights at init.

    Given the branch input's Gram (mean square ``var`` / correlation-carrying ``cov`` per
    coordinate of q and k: sigma_w2 q_in + sigma_b2 and sigma_w2 r_in + sigma_b2), each of the
    d coordinates of q = W_q h + b_q is, at infinite width, Gaussian across the T positions with
    that covariance, i.i.d. over coordinates, and k likewise and independently (its own weights);
    the logits are scale q_i.k_j and p_i = softmax_j. The first number is 1/T for uniform
    attention and 1 for one-hot rows; the second is 1/T for uniform attention and the chance
    that two queries pick the same key for one-hot rows. The softmax of correlated Gaussians has
    no closed form, so both are Monte Carlo means over ``ATTENTION_ROWS`` rows from a fixed seed
    (reproducible; relative error about 1% where the rows are neither uniform nor one-hot).
    Logits that vary by less than 1e-4 within a row give exactly 1/T (the O(sigma^2) correction
    is below 1e-8)."""
    own, cov = max(var - cov, 0.0), max(cov, 0.0)
    if scale * math.sqrt(head_dim * own * var) < 1e-4:
        return 1.0 / tokens, 1.0 / tokens
    n = math.ceil(ATTENTION_ROWS / tokens)
    rng = np.random.default_rng(ATTENTION_SEED)

    def draw() -> np.ndarray:  # (n, T, d): own part per position, common part per coordinate
        common = rng.standard_normal((n, 1, head_dim))
        return math.sqrt(own) * rng.standard_normal((n, tokens, head_dim)) + math.sqrt(cov) * common

    logits = scale * np.einsum("nid,njd->nij", draw(), draw())
    p = np.exp(logits - logits.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    overlap = np.einsum("nij,nkj->nik", p, p)  # sum_j p_ij p_kj per pair of rows
    diagonal = np.trace(overlap, axis1=1, axis2=2)
    same = float(np.mean(diagonal) / tokens)
    other = float(np.mean(overlap.sum(axis=(1, 2)) - diagonal) / (tokens * (tokens - 1)))
    return same, other


class TransformerStream(NamedTuple):
    """A transformer's residual stream at initialization, positions exchangeable."""

    stream_var: np.ndarray  # (L+1,) q_l, mean square of a position of x_l (x_0: the embedding)
    stream_corr: np.ndarray  # (L+1,) mean correlation between two positions of x_l
    attention_in: np.ndarray  # (L,) mean square of each attention branch's input
    concentration: np.ndarray  # (L,) E[sum_j p_ij^2]: 1/T uniform attention, 1 one-hot
    stream_var_ratio: float  # q_L / q_0


TRANSFORMER_STREAM_NORMS = ("none", "pre", "rmsnorm")


def transformer_stream(
    depth: int,
    residual: str,
    norm: str,
    activation: str,
    sigma_w2: float,
    sigma_b2: float = 0.0,
    slope: float = 0.01,
    *,
    tokens: int,
    head_dim: int,
    scale: float,
    q0: float,
    c0: float,
    fc1_sigma_w2: float | None = None,
    fc2_sigma_w2: float | None = None,
    branch: float = 1.0,
) -> TransformerStream:
    """The stream's variance through live attention and MLP branches without post-norm
    (``model.norm`` none, pre, rmsnorm), at initialization and infinite width.

    State per block: q, the mean square of one position of x, and r, the mean inner product
    x_i.x_k / n of two distinct positions (correlation c = r / q). Approximation, the one
    assumption beyond the infinite width: *positions are exchangeable*, every pair of positions
    carries the mean correlation c (on the recall task c_0 is set by which positions share a
    token, ``predict.token_match_rate``: pairs differ, 1/2 or 0, and the MLP's correlation map is
    not linear, so this is the Gram matrix's mean, not its exact evolution). The branch sees
    (q_in, r_in) = (1, c) behind a pre-norm or RMSNorm (each position rescaled to unit mean
    square; the coordinate mean a LayerNorm removes is O(1/sqrt(n)) at init), (q, r) without.

    - Attention (Vaswani et al. 2017), per head: v_j = W_v h_j + b_v, m_i = sum_j p_ij v_j,
      output W_o m_i + b_o. W_v, W_o are independent of the attention weights p (which come from
      W_q, W_k) and of the stream, so the output's mean square is
          A = s_o sigma_w2 E[|m_i|^2 / n] + sigma_b2,
          E[|m_i|^2 / n] = sum_jl E[p_ij p_il] (s_v sigma_w2 G_jl + sigma_b2)
                         = (V_d - V_o) E[sum_j p_ij^2] + V_o        (rows of p sum to 1),
      V_d = s_v sigma_w2 q_in + sigma_b2, V_o = s_v sigma_w2 r_in + sigma_b2, and for two
      positions i != k the same with E[sum_j p_ij p_kj] (``attention_overlaps``). s_v, s_o are
      the rule's factors on the value and output projections (``residual_scales`` w1_var, w2_var).
      Near-uniform attention (the logit std scale sqrt(d) (sigma_w2 q_in + sigma_b2) small, e.g.
      1/d at large d) gives both overlaps 1/T: every position receives the same average of the
      value vectors, A's diagonal s_o sigma_w2 (V_o + (V_d - V_o) / T) + sigma_b2; this common
      vector raises the correlation between positions block after block, the rank collapse of
      Noci et al. 2022 ("Signal propagation in transformers", arXiv 2206.03126; Dong et al.
      2021). One-hot rows (large logits) give E[sum p^2] = 1 and A = s_o sigma_w2 V_d +
      sigma_b2: each position receives one value vector whole.
    - MLP, position by position: M_d = V(q_in) as the residual MLP's branch (``_branch_var``,
      with fc1's and fc2's own sigma_w2: a (w, 4w) and a (4w, w) kernel), and between positions
      M_o = s2 sigma_w2 E[phi(u_1) phi(u_2)] + sigma_b2 with (u_1, u_2) the fc1 pre-activations,
      Gaussian with covariance s1 sigma_w2 (q_in, r_in) + sigma_b2 (the correlation map of Poole
      et al. 2016 / Schoenholz et al. 2017).
    - Each sum adds its branch's Gram (the branch's last layer is zero-mean and independent of
      the stream, as in ``residual_stream``): q <- a^2 q + alpha^2 A_d then + alpha^2 M_d, and
      r likewise with A_o, M_o; alpha includes depth_mup's ``branch`` multiplier.

    With pre-norm the growth is additive as for the residual MLP (Xiong et al. 2020), but each
    block adds alpha^2 (A_d + M_d) where A_d grows with the correlation between positions, so
    q_L / q_0 lies between the uncorrelated and the fully correlated sums. How much the
    exchangeable approximation costs, checked on recall (4 pairs, 4 pre-norm blocks, uniform
    attention, ReLU at He): the exact recursion of each probe sequence's T x T Gram matrix gives
    q_L / q_0 = 8.525, this one 8.538 (0.15%). Biases are taken zero-mean; the finite width adds
    O(1/sqrt(n)) noise per block, and with few heads the attention part fluctuates from one draw
    to the next (each head's p is one random draw): this is the expectation.
    """
    if norm not in TRANSFORMER_STREAM_NORMS:
        raise ValueError(
            f"model.norm={norm!r}: transformer_stream covers "
            f"{', '.join(TRANSFORMER_STREAM_NORMS)} (post-norm: predict.transformer_prediction)"
        )
    s = residual_scales(residual, depth)
    phi, _, _ = _derivatives(activation, slope)
    fc1 = sigma_w2 if fc1_sigma_w2 is None else fc1_sigma_w2
    fc2 = sigma_w2 if fc2_sigma_w2 is None else fc2_sigma_w2
    a2, alpha2 = s.skip**2, (s.alpha * branch) ** 2
    normalized = norm in ("pre", "rmsnorm")
    q, r = float(q0), float(c0) * float(q0)
    qs, cs, ins, conc = [q], [c0], [], []

    def branch_input(q: float, r: float) -> tuple[float, float]:
        return (1.0, r / q) if normalized else (q, r)

    for _ in range(int(depth)):
        q_in, r_in = branch_input(q, r)
        ins.append(q_in)
        same, other = attention_overlaps(
            int(tokens),
            int(head_dim),
            float(scale),
            sigma_w2 * q_in + sigma_b2,
            sigma_w2 * r_in + sigma_b2,
        )
        conc.append(same)
        v_d, v_o = s.w1_var * sigma_w2 * q_in + sigma_b2, s.w1_var * sigma_w2 * r_in + sigma_b2
        out = s.w2_var * sigma_w2
        q = a2 * q + alpha2 * (out * ((v_d - v_o) * same + v_o) + sigma_b2)
        r = a2 * r + alpha2 * (out * ((v_d - v_o) * other + v_o) + sigma_b2)
        q_in, r_in = branch_input(q, r)
        pre_d, pre_o = s.w1_var * fc1 * q_in + sigma_b2, s.w1_var * fc1 * r_in + sigma_b2
        m_o = _pair_mean(phi, phi, pre_d, min(pre_o / pre_d, 1.0)) if pre_d > 0 else 0.0
        q = a2 * q + alpha2 * _branch_var(phi, q_in, s.w1_var * fc1, s.w2_var * fc2, sigma_b2)
        r = a2 * r + alpha2 * (s.w2_var * fc2 * m_o + sigma_b2)
        qs.append(q)
        cs.append(r / q if q > 0 else 0.0)
    return TransformerStream(
        stream_var=np.array(qs),
        stream_corr=np.array(cs),
        attention_in=np.array(ins),
        concentration=np.array(conc),
        stream_var_ratio=qs[-1] / q0,
    )


@cache
def cached_transformer_stream(*args, **kwargs) -> TransformerStream:
    """``transformer_stream``, once per argument tuple (its attention overlaps are Monte Carlo)."""
    return transformer_stream(*args, **kwargs)


# The trial adapters that lived here until issue 25, now ``pipeline.core.predict``'s, still read
# as ``theory.trial_prediction`` or ``pipeline.theory.trial_prediction`` by callers written before.
# predict imports this module, so an import of predict here would close a cycle: the names are
# looked up when first read (PEP 562), the one way back, and no module in pipeline/ uses it.
MOVED_TO_PREDICT = (
    "kernel_sigma_w2",
    "token_match_rate",
    "transformer_prediction",
    "trial_branch_multiplier",
    "trial_prediction",
    "trial_transformer_stream",
    "trial_variances",
)


def __getattr__(name: str):
    if name in MOVED_TO_PREDICT:
        return getattr(importlib.import_module("pipeline.core.predict"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *MOVED_TO_PREDICT})
