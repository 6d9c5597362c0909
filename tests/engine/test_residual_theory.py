"""Residual-stream variance theory (issue 13) against closed forms and wide random networks
(depth-muP's branch multiplier included)."""

from __future__ import annotations

import math
from functools import cache, partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY

from pipeline.config import TrialSpec, load_config
from pipeline.core.activations import ACTIVATIONS
from pipeline.core.predict import trial_branch_multiplier, trial_prediction
from pipeline.core.theory import (
    NORMS,
    RESIDUALS,
    ResidualScales,
    residual_scales,
    residual_stream,
)
from pipeline.engine.rows import residual_row

COMBOS = [(r, n) for n in NORMS for r in RESIDUALS if r != "deepnorm" or n == "post"]
NORM_CODE = {n: i for i, n in enumerate(NORMS)}
WIDTH, BATCH, SEEDS = 1024, 16, (0, 1, 2)
Z = 4.0  # standard errors of slack on the first-order noise of _noise (0.7-1.5x a 10-seed run)
FLOAT32_SLACK = 1e-5  # float32 rounding where the finite-width noise is exactly 0
# He for ReLU; tanh at sigma_w2 = 1 with random biases, so the bias terms are exercised too.
VARIANCES = {"relu": (2.0, 0.0), "tanh": (1.0, 0.05)}
DEPTHS = (4, 16)


class Measured(NamedTuple):
    sum_var: np.ndarray  # (seeds, L) mean square of skip x_l + alpha B(x_l)
    branch_ratio: np.ndarray  # (seeds, L) mean square of alpha B over that of skip x_l
    stream_var: np.ndarray  # (seeds, L) mean square of x_{l+1}


def _normalize(x, center: bool = True, eps: float = 1e-6):
    """LayerNorm (center) or RMSNorm, at their initial gain 1 and bias 0."""
    if center:
        x = x - jnp.mean(x, -1, keepdims=True)
    return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + eps)


def _mean_square(v):
    """Mean square over batch and width, one number per combination."""
    return jnp.mean(v * v, axis=(1, 2))


@partial(jax.jit, static_argnames="activation")
def _simulate(key_x, keys_w, scales, norm, sigma_w2, sigma_b2, activation):
    """Every combination at once on the same weights: x is (combos, batch, n), so a block is
    two large matmuls and the per-combination constants are traced columns."""
    phi, n = ACTIVATIONS[activation].fn, WIDTH
    x = jax.random.normal(key_x, (BATCH, n))
    x = x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True))  # q_0 = 1 exactly, every input
    x = jnp.broadcast_to(x, (norm.shape[0], BATCH, n))
    alpha, skip, w1_var, w2_var = (v[:, None, None] for v in scales)
    code = norm[:, None, None]

    def block(x, key):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        w1 = jax.random.normal(k1, (n, n)) * jnp.sqrt(sigma_w2 / n)
        w2 = jax.random.normal(k2, (n, n)) * jnp.sqrt(sigma_w2 / n)
        b1, b2 = (jax.random.normal(k, (n,)) * jnp.sqrt(sigma_b2) for k in (k3, k4))
        x_in = jnp.where(code == 1, _normalize(x), jnp.where(code == 2, _normalize(x, False), x))
        h = jnp.sqrt(w1_var) * (x_in @ w1) + b1
        branch = alpha * (jnp.sqrt(w2_var) * (phi(h, 0.01) @ w2) + b2)
        u = skip * x + branch
        x_next = jnp.where(code == 3, _normalize(u), u)
        sums = _mean_square(u)
        return x_next, (sums, _mean_square(branch) / _mean_square(skip * x), _mean_square(x_next))

    return jax.lax.scan(block, x, keys_w)[1]


@cache
def _measure(activation: str, depth: int, rows: tuple[tuple[ResidualScales, str], ...]) -> list:
    """Mean squares per block of each (constants, norm) row, one network per seed."""
    sigma_w2, sigma_b2 = VARIANCES[activation]
    scales = ResidualScales(*(jnp.asarray(v, jnp.float32) for v in zip(*(s for s, _ in rows))))
    norm = jnp.asarray([NORM_CODE[n] for _, n in rows])
    runs = []
    for seed in SEEDS:
        key_x, key_w = jax.random.split(jax.random.key(seed))
        out = _simulate(
            key_x, jax.random.split(key_w, depth), scales, norm, sigma_w2, sigma_b2, activation
        )
        runs.append([np.asarray(o, np.float64).T for o in out])  # each (rows, L)
    return [
        Measured(*(np.stack([run[k][i] for run in runs]) for k in range(3)))
        for i in range(len(rows))
    ]


@cache
def _monte_carlo(activation: str, depth: int) -> dict[tuple[str, str], Measured]:
    """Mean squares per block for every (residual, norm), one network per seed."""
    rows = tuple((residual_scales(r, depth), n) for r, n in COMBOS)
    return dict(zip(COMBOS, _measure(activation, depth, rows)))


@cache
def _gaussian_moments(activation: str, pre_var: float, corr: float) -> tuple[float, ...]:
    """m2 = E[phi(u)^2], m4 = E[phi(u)^4], E[phi(u1) phi(u2)], E[phi(u1)^2 phi(u2)^2] for
    u, u1, u2 ~ N(0, pre_var), corr(u1, u2) = corr (2-D Gauss-Hermite quadrature)."""
    z, w = np.polynomial.hermite_e.hermegauss(40)
    z1, z2 = np.meshgrid(z, z, indexing="ij")
    ww = np.outer(w, w) / (2 * math.pi)
    s = math.sqrt(pre_var)
    u2 = s * (corr * z1 + math.sqrt(max(0.0, 1 - corr * corr)) * z2)
    with jax.enable_x64(True):
        f1, f2 = (
            np.asarray(ACTIVATIONS[activation].fn(jnp.asarray(u), 0.01)) for u in (s * z1, u2)
        )
    return tuple(float(np.sum(ww * v)) for v in (f1**2, f1**4, f1 * f2, f1**2 * f2**2))


@cache
def _noise(
    residual: str, norm: str, activation: str, depth: int, branch: float = 1.0
) -> tuple[np.ndarray, ...]:
    """Relative standard deviation, per block and for one seed, of the batch-mean sum_var and
    branch ratio: finite-width theory to first order in 1/n (the delta method).

    Given a block's input, h = W1 x is i.i.d. Gaussian over the n units, so |phi(h)|^2 / n has
    relative variance kappa / n, kappa = E[phi^4] / E[phi^2]^2 - 1 (5 for ReLU, Hanin & Rolnick
    2018's constant); W2 adds 2 / n and the cross term 2 a alpha x.B / n adds 4 a^2 q V / n.
    Two inputs whose streams correlate by c share part of that noise: kappa becomes
    Cov(phi(u1)^2, phi(u2)^2) / E[phi^2]^2, 2 becomes 2 rho^2 (rho the correlation of phi(h)),
    the cross term gets c rho; c itself follows the residual correlation map (Yang & Schoenholz
    2017). Earlier blocks' noise carries over with slope dT/dq (a^2 + alpha^2 dV/dq without a
    norm on the branch input, a^2 with one) and a post-LayerNorm resets it. The batch of B
    inputs then has Var(mean) = (var + (B - 1) cov) / B. Shared biases add 2 V_b^2 / n.
    ``branch``: depth_mup's multiplier on alpha.
    """
    sigma_w2, sigma_b2 = VARIANCES[activation]
    s = residual_scales(residual, depth)
    s1, s2 = s.w1_var * sigma_w2, s.w2_var * sigma_w2
    a2, alpha2 = s.skip**2, (s.alpha * branch) ** 2
    p = residual_stream(depth, residual, norm, activation, sigma_w2, sigma_b2, branch=branch)
    var_q = cov_q = corr = 0.0  # x_0: mean square normalized exactly, inputs ~ orthogonal
    sums, ratios = [], []
    for q, total in zip(p.stream_var[:-1], p.sum_var):
        q_in = q if norm in ("none", "post") else 1.0
        pre = s1 * q_in + sigma_b2
        corr_h = (s1 * q_in * corr + sigma_b2) / pre
        m2, m4, e11, e22 = _gaussian_moments(activation, pre, corr_h)
        rho = e11 / m2 if m2 > 0 else 0.0
        v_w, v_b = alpha2 * s2 * m2, alpha2 * sigma_b2
        own = (m4 / m2**2 - 1 + 2) if m2 > 0 else 0.0
        shared = ((e22 - m2 * m2) / m2**2 + 2 * rho**2) if m2 > 0 else 0.0
        fresh_var = own * v_w**2 + 2 * v_b**2 + 4 * v_w * v_b + 4 * a2 * q * (v_w + v_b)
        fresh_cov = shared * v_w**2 + 2 * v_b**2 + 4 * rho * v_w * v_b
        fresh_cov += 4 * a2 * q * corr * (rho * v_w + v_b)
        slope = a2
        if q_in == q and q > 0:  # the branch sees the raw stream: its variance moves with q
            step = 1e-3 * pre
            up, down = (_gaussian_moments(activation, pre + d, 1.0)[0] for d in (step, -step))
            slope += alpha2 * s2 * s1 * (up - down) / (2 * step)
        var_t = slope**2 * var_q + fresh_var / WIDTH
        cov_t = slope**2 * cov_q + fresh_cov / WIDTH
        sums.append(math.sqrt((var_t + (BATCH - 1) * cov_t) / BATCH) / total)
        branch_var = own * v_w**2 + 2 * v_b**2 + 4 * v_w * v_b
        branch_cov = shared * v_w**2 + 2 * v_b**2 + 4 * rho * v_w * v_b
        branch_noise = (branch_var + (BATCH - 1) * branch_cov) / BATCH / WIDTH
        branch_noise = branch_noise / (v_w + v_b) ** 2 if v_w + v_b > 0 else 0.0
        q_noise = (var_q + (BATCH - 1) * cov_q) / (BATCH * q * q)
        ratios.append(math.sqrt(branch_noise + q_noise) if v_w + v_b > 0 else 0.0)
        corr = (a2 * q * corr + alpha2 * (s2 * e11 + sigma_b2)) / total
        var_q, cov_q = (0.0, 0.0) if norm == "post" else (var_t, cov_t)
    return np.array(sums), np.array(ratios)


def _tolerance(relative_sd: np.ndarray) -> np.ndarray:
    """Z standard errors of a mean over the seeds, plus float32 rounding."""
    return Z * relative_sd / math.sqrt(len(SEEDS)) + FLOAT32_SLACK


def _relative_error(measured: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    return np.abs(measured.mean(0) / np.where(predicted == 0, 1.0, predicted) - 1.0) * (
        predicted != 0
    ) + np.abs(measured.mean(0)) * (predicted == 0)


# --- Monte Carlo: every residual x norm, two activations, two depths --------------------------


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("activation", sorted(VARIANCES))
@pytest.mark.parametrize(("residual", "norm"), COMBOS)
def test_stream_variance_matches_a_wide_random_network(residual, norm, activation, depth):
    sigma_w2, sigma_b2 = VARIANCES[activation]
    p = residual_stream(depth, residual, norm, activation, sigma_w2, sigma_b2)
    measured = _monte_carlo(activation, depth)[residual, norm]
    sum_sd, ratio_sd = _noise(residual, norm, activation, depth)
    sum_error = _relative_error(measured.sum_var, p.sum_var)
    assert np.all(sum_error <= _tolerance(sum_sd)), (sum_error, _tolerance(sum_sd))
    ratio_error = _relative_error(measured.branch_ratio, p.branch_ratio)
    assert np.all(ratio_error <= _tolerance(ratio_sd)), (ratio_error, _tolerance(ratio_sd))
    # The stream itself: the sum, or 1 after a post-LayerNorm (up to its epsilon).
    stream_error = _relative_error(measured.stream_var, p.stream_var[1:])
    assert np.all(stream_error <= _tolerance(0.0 if norm == "post" else sum_sd))


# --- depth-muP: each branch x 1/sqrt(L / L_base) (Yang et al. 2023; Bordelon et al. 2023) -------

DEPTH_MUP = (("none", "none"), ("none", "pre"), ("scaled", "none"))  # (init.residual, model.norm)


def _depth_mup_trial(residual: str, norm: str) -> TrialSpec:
    """A resmlp trial of 16 blocks at init.parametrization=depth_mup, base depth 4 (ReLU, He)."""
    args = ["model.kind=resmlp", "model.depth=16", "model.base_depth=4", "model.activation=relu"]
    args += ["init.parametrization=depth_mup", "init.weights=he_normal", "init.gain=1.0"]
    args += [f"model.norm={norm}", f"init.residual={residual}"]
    return TrialSpec.of_config(load_config([*TINY, *args]))


def test_depth_mup_branch_multiplier_matches_a_wide_random_network():
    """The engine's own forward constants for depth_mup (``rows.residual_row``: alpha x 1/2 at
    L / L_base = 4) in the simulation: theory (``trial_prediction``, the recursion block by
    block) within the finite-width tolerance, the formula without the multiplier rejected."""
    depth, trials = 16, [_depth_mup_trial(*c) for c in DEPTH_MUP]
    rows = []
    for trial, (residual, norm) in zip(trials, DEPTH_MUP):
        engine = residual_row(trial)
        w1_var, w2_var = residual_scales(residual, depth)[2:]
        rows.append((ResidualScales(float(engine.alpha), float(engine.skip), w1_var, w2_var), norm))
    for trial, (residual, norm), measured in zip(
        trials, DEPTH_MUP, _measure("relu", 16, tuple(rows))
    ):
        branch = trial_branch_multiplier(trial)
        assert branch == 0.5
        p = residual_stream(depth, residual, norm, "relu", 2.0, branch=branch)
        assert trial_prediction(trial)["theory.stream_var_ratio"] == pytest.approx(
            p.stream_var_ratio, rel=1e-9
        )
        tol = _tolerance(_noise(residual, norm, "relu", depth, branch)[0])
        error = _relative_error(measured.sum_var, p.sum_var)
        assert np.all(error <= tol), (residual, norm, error, tol)
        sp = residual_stream(depth, residual, norm, "relu", 2.0)  # the multiplier left out
        assert _relative_error(measured.sum_var, sp.sum_var)[-1] > 2 * tol[-1]
    # Closed forms, alpha^2 = L_base / L: pre-norm 1 + 2 L_base = 9 whatever L; none
    # (1 + 2 L_base / L)^L = 1.5^16 here, e^(2 L_base) as L grows.
    assert residual_stream(64, "none", "pre", "relu", 2.0, branch=0.25).stream_var_ratio == (
        pytest.approx(9.0, rel=1e-9)
    )
    none = residual_stream(16, "none", "none", "relu", 2.0, branch=0.5).stream_var_ratio
    assert none == pytest.approx(1.5**16, rel=1e-9)


# --- Planted failures: the tolerance is tight enough to reject a wrong formula -----------------


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("norm", ["none", "pre", "post"])
def test_the_alpha_one_formula_is_rejected_for_scaled(norm, depth):
    right = residual_stream(depth, "scaled", norm, "relu", 2.0)
    wrong = residual_stream(depth, "none", norm, "relu", 2.0)
    measured = _monte_carlo("relu", depth)["scaled", norm].sum_var
    tol = _tolerance(_noise("scaled", norm, "relu", depth)[0])
    assert _relative_error(measured, right.sum_var)[-1] <= tol[-1]
    assert _relative_error(measured, wrong.sum_var)[-1] > 2 * tol[-1]


def test_the_large_depth_limit_is_rejected_at_depth_4():
    # (1 + 2/L)^L = 5.06 at L = 4, not its limit e^2 = 7.39.
    measured = _monte_carlo("relu", 4)["scaled", "none"].sum_var[:, -1]
    tol = _tolerance(_noise("scaled", "none", "relu", 4)[0])[-1]
    assert abs(measured.mean() / math.e**2 - 1) > 2 * tol


@pytest.mark.parametrize("depth", DEPTHS)
def test_a_he_relu_branch_doubles_variance_it_does_not_preserve_it(depth):
    # Both branch layers at He see an input that is not ReLU-ed, so V = 2q: q_L = 3^L, not 2^L.
    measured = _monte_carlo("relu", depth)["none", "none"].sum_var[:, -1]
    tol = _tolerance(_noise("none", "none", "relu", depth)[0])[-1]
    assert abs(measured.mean() / 3.0**depth - 1) <= tol
    assert abs(measured.mean() / 2.0**depth - 1) > 2 * tol


@pytest.mark.parametrize("depth", DEPTHS)
def test_deepnorm_scaling_only_w2_is_told_apart(depth):
    # With W1 left at He, V = 2 beta^2 instead of 2 beta^4: a^2 + V moves by ~10% at L = 4.
    wrong = math.sqrt(2 * depth) + 2 * (8 * depth) ** -0.5
    measured = _monte_carlo("relu", depth)["deepnorm", "post"].sum_var[:, -1]
    tol = _tolerance(_noise("deepnorm", "post", "relu", depth)[0])[-1]
    assert abs(measured.mean() / wrong - 1) > 2 * tol


# --- Closed forms --------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 4, 16, 64, 256])
def test_no_norm_closed_forms(depth):
    q0 = 2.5
    relu = residual_stream(depth, "none", "none", "relu", 2.0, q0=q0)
    assert relu.stream_var == pytest.approx(q0 * 3.0 ** np.arange(depth + 1), rel=1e-9)
    linear = residual_stream(depth, "none", "none", "identity", 1.0, q0=q0)
    assert linear.stream_var_ratio == pytest.approx(2.0**depth, rel=1e-9)
    scaled = residual_stream(depth, "scaled", "none", "relu", 2.0, q0=q0)
    assert scaled.stream_var_ratio == pytest.approx((1 + 2 / depth) ** depth, rel=1e-9)
    assert relu.identity_share == pytest.approx(1 / relu.stream_var_ratio, rel=1e-9)


def test_scaled_tends_to_e_to_the_branch_gain():
    # (1 + v/L)^L = e^v (1 - v^2 / (2L) + O(1/L^2)): within 2/L of e^2 and 1/L of e at L = 2000.
    depth = 2000
    relu = residual_stream(depth, "scaled", "none", "relu", 2.0).stream_var_ratio
    linear = residual_stream(depth, "scaled", "none", "identity", 1.0).stream_var_ratio
    assert relu == pytest.approx(math.e**2, rel=2 / depth) and relu < math.e**2
    assert linear == pytest.approx(math.e, rel=1 / depth) and linear < math.e


@pytest.mark.parametrize("residual", ["fixup", "skipinit", "rezero"])
@pytest.mark.parametrize("norm", NORMS)
def test_a_zero_branch_keeps_the_stream_exactly(residual, norm):
    p = residual_stream(64, residual, norm, "relu", 2.0, q0=1.7)
    assert np.all(p.branch_ratio == 0.0) and p.identity_share == 1.0
    if norm == "post":
        assert p.sum_var[0] == 1.7 and np.all(p.sum_var[1:] == 1.0)
    else:
        assert np.all(p.stream_var == 1.7) and p.stream_var_ratio == 1.0


@pytest.mark.parametrize("norm", ["pre", "rmsnorm"])
@pytest.mark.parametrize("depth", [4, 16, 256])
def test_pre_norm_grows_linearly(norm, depth):
    q0 = 0.5  # c = 2 E[relu(sqrt(2) z)^2] = 2 for ReLU+He
    stream = residual_stream(depth, "none", norm, "relu", 2.0, q0=q0).stream_var
    assert stream == pytest.approx(q0 + 2.0 * np.arange(depth + 1), rel=1e-9)
    assert residual_stream(depth, "scaled", norm, "relu", 2.0, q0=q0).stream_var[-1] == (
        pytest.approx(q0 + 2.0, rel=1e-9)
    )
    assert residual_stream(depth, "gpt2", norm, "relu", 2.0, q0=q0).stream_var[-1] == (
        pytest.approx(q0 + 1.0, rel=1e-9)
    )


@pytest.mark.parametrize("depth", [4, 16, 256])
def test_post_norm_and_deepnorm(depth):
    post = residual_stream(depth, "none", "post", "relu", 2.0)
    assert post.sum_var == pytest.approx(np.full(depth, 3.0), rel=1e-9)
    assert post.identity_share == pytest.approx(3.0**-depth, rel=1e-9)
    deep = residual_stream(depth, "deepnorm", "post", "relu", 2.0)
    a2 = math.sqrt(2 * depth)
    assert deep.sum_var == pytest.approx(np.full(depth, a2 + 1 / (4 * depth)), rel=1e-9)
    assert deep.branch_ratio == pytest.approx(np.full(depth, 1 / (4 * depth * a2)), rel=1e-9)


def test_residual_scales_are_the_papers_constants():
    assert residual_scales("fixup", 16) == (1.0, 1.0, 1 / 16, 0.0)  # L^(-1/(2m-2)), m = 2
    assert residual_scales("gpt2", 16).w2_var == pytest.approx(1 / 32)
    deep = residual_scales("deepnorm", 16)
    assert deep.skip == pytest.approx(32**0.25) and deep.w2_var == pytest.approx(128**-0.5)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((4, "sqrt", "none"), "init.residual='sqrt': expected one of none, scaled"),
        ((4, "none", "batch"), "model.norm='batch': expected one of none, pre, rmsnorm, post"),
        ((4, "deepnorm", "pre"), "needs model.norm='post'"),
        ((0, "none", "none"), "at least 1 block"),
    ],
)
def test_unknown_or_unsupported_choices_raise_one_line(args, match):
    with pytest.raises(ValueError, match=match.replace("(", r"\(")) as err:
        residual_stream(*args, "relu", 2.0)
    assert "\n" not in str(err.value)
