"""What mean-field theory predicts for one trial: its config read into ``pipeline.core.theory``.

``theory`` is the math of wide random networks, in sigma_w2, sigma_b2, depth and activation
names; this module reads a trial (a ``TrialSpec`` or a flat dict of dotted keys: the sweep, the
``train`` command and the reports pass either) into those arguments: the variances its
initializer draws (``trial_variances``, ``kernel_sigma_w2``), depth-muP's branch multiplier, the
recall data's token statistics, and the ``theory.*`` metrics a sweep stores on each trial and
logs to MLflow (``trial_prediction``). Split from ``theory`` (issue 25), whose module still
answers to these names (``pipeline.theory.trial_prediction``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from pipeline.core.initializers import INITIALIZERS, bias_moments, expected_std, resolve_gain
from pipeline.core.model import layer_shapes
from pipeline.core.parametrization import branch_multiplier
from pipeline.core.residual import embedding_var, residual_scales
from pipeline.core.theory import (
    TransformerStream,
    attention_logit_std,
    branch_var,
    cached_propagation,
    cached_stream_ratio,
    cached_transformer_stream,
)
from pipeline.core.transformer import MLP_RATIO, attention_scale


class _Shapes(NamedTuple):
    """The fields of a ``Structure`` that ``layer_shapes`` reads."""

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
    weights = trial["init.weights"]
    if INITIALIZERS[weights].draw == "constant" or INITIALIZERS[weights].data_dependent:
        return None
    width = int(trial["model.width"])
    kind = trial.get("model.kind", "mlp")
    shape = layer_shapes(_Shapes(width, kind))["hidden"]  # (w, w), or (3, 3, w, w) for a CNN
    mean, bias_std = bias_moments(
        trial["init.bias"], trial["init.bias_value"], trial["init.bias_std"]
    )
    return kernel_sigma_w2(trial, shape), bias_std * bias_std + mean * mean


def kernel_sigma_w2(trial, shape: tuple[int, ...]) -> float:
    """fan_in x Var(W) of a kernel of ``shape`` drawn by the trial's ``init.weights`` and gain:
    the same for every shape with a fan-in rule (He, LeCun), not with fan_avg (Glorot) or
    orthogonal ones, e.g. a transformer's (w, 4w) ``fc1`` and (4w, w) ``fc2``."""
    weights = trial["init.weights"]
    gain = resolve_gain(
        weights, trial["init.gain"], trial["model.activation"], trial["model.negative_slope"]
    )
    params = {k: trial[f"init.{k}"] for k in ("mode", "std", "limit", "value")}
    std = expected_std(weights, shape, gain, params)
    return math.prod(shape[:-1]) * std * std


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
    out = {
        "theory.sigma_w2": sw2,
        "theory.sigma_b2": sb2,
        "theory.chi1": p["chi1"],
        "theory.xi_c": p["xi_c"],
        "theory.max_trainable_depth": p["max_trainable_depth"],
    }
    if trial.get("model.kind") == "transformer":
        out.update(transformer_prediction(trial, sw2, sb2))
    if trial.get("model.kind") == "resmlp":  # the branch layers are drawn like hidden ones
        out["theory.stream_var_ratio"] = cached_stream_ratio(
            trial["model.depth"],
            trial["init.residual"],
            trial["model.norm"],
            trial["model.activation"],
            sw2,
            sb2,
            float(trial["model.negative_slope"]),
            trial_branch_multiplier(trial),
        )
    return out


def trial_branch_multiplier(trial) -> float:
    """``init.parametrization``'s factor on every residual branch: depth_mup's
    1/sqrt(depth / base_depth) (Yang et al. 2023, Tensor Programs VI; Bordelon et al. 2023),
    ``parametrization.branch_multiplier``, the factor the engine multiplies alpha by
    (``engine.rows.residual_row``); 1 otherwise. It scales alpha, so the branch's variance
    contribution by its square."""
    depth = int(trial["model.depth"])
    base_depth = trial.get("model.base_depth") or depth
    name = trial.get("init.parametrization") or "sp"
    return branch_multiplier(name, depth / int(base_depth))


def token_match_rate(trial) -> float | None:
    """The probability that two distinct positions of one sequence hold the same token, from
    the trial's data keys; None where the data's token statistics are not known here.

    ``data.name=recall`` (``pipeline.core.data.recall``): T = 2P + 1 positions, P distinct keys,
    P values drawn uniformly with replacement from V = ``data.value_vocab``, a query equal to one
    of the keys, keys and values from disjoint tokens. Equal pairs per sequence: the query and
    its key (1) and each pair of equal values (C(P, 2) / V expected), out of C(T, 2) pairs."""
    if trial.get("data.name") != "recall":
        return None
    pairs, values = int(trial["data.pairs"]), int(trial["data.value_vocab"])
    tokens = 2 * pairs + 1
    return (1.0 + pairs * (pairs - 1) / 2 / values) / (tokens * (tokens - 1) / 2)


def _fc_sigma_w2(trial) -> tuple[float, float]:
    """fc1's and fc2's sigma_w2 (a (w, 4w) and a (4w, w) kernel), 4 significant digits."""
    width = int(trial["model.width"])
    shapes = ((width, MLP_RATIO * width), (MLP_RATIO * width, width))
    fc1, fc2 = (float(f"{kernel_sigma_w2(trial, shape):.4g}") for shape in shapes)
    return fc1, fc2


def _trial_stream(trial, sigma_w2: float, sigma_b2: float) -> TransformerStream | None:
    """``theory.transformer_stream`` of a transformer trial whose branches are live (no zero
    gate) and not post-normed, on data whose token statistics are known (``token_match_rate``)."""
    depth, residual, norm = int(trial["model.depth"]), trial["init.residual"], trial["model.norm"]
    match = token_match_rate(trial)
    q0 = 2.0 * float(trial["init.embedding_std"]) ** 2 * embedding_var(residual, depth)
    if norm == "post" or residual in ("skipinit", "rezero") or q0 <= 0 or match is None:
        return None
    fc1, fc2 = _fc_sigma_w2(trial)
    return cached_transformer_stream(
        depth,
        residual,
        norm,
        trial["model.activation"],
        sigma_w2,
        sigma_b2,
        float(trial["model.negative_slope"]),
        tokens=2 * int(trial["data.pairs"]) + 1,
        head_dim=int(trial["model.width"]) // int(trial["model.heads"]),
        scale=float(attention_scale(trial)),
        q0=q0,
        c0=match / 2.0,  # equal tokens share one of the two equal-variance tables
        fc1_sigma_w2=fc1,
        fc2_sigma_w2=fc2,
        branch=trial_branch_multiplier(trial),
    )


def trial_transformer_stream(trial) -> TransformerStream | None:
    """The stream of a transformer trial block by block (``theory.transformer_stream``) where
    it is given: live branches, ``model.norm`` none, pre or rmsnorm, recall data; None
    otherwise."""
    variances = trial_variances(trial)
    if variances is None or trial.get("model.kind") != "transformer":
        return None
    sw2, sb2 = (float(f"{v:.4g}") for v in variances)
    return _trial_stream(trial, sw2, sb2)


def transformer_prediction(trial, sigma_w2: float, sigma_b2: float) -> dict[str, float]:
    """``theory.logit_std`` and ``theory.stream_var_ratio`` of a transformer trial:

    - logit std (``theory.attention_logit_std``, mean over blocks) from each block's attention
      input mean square: 1 behind a ``pre``/``rmsnorm`` norm, 1 after the first block with
      ``post`` (the first reads x_0: q_0), q_0 for every block when the stream stays x_0 (a zero
      gate: ``skipinit``/``rezero``) or there is one block, and otherwise (``none`` with live
      branches) ``theory.transformer_stream``'s, where the data's token statistics are known.
    - stream_var_ratio (the sum entering the last post-norm, or the stream after the last block,
      over q_0): with ``post`` the last branch is the MLP on a LayerNorm-ed input, so it is
      (skip^2 + alpha^2 V(1)) / q_0 with V the residual MLP's branch variance
      (``theory.residual_stream``), whatever the data; a zero gate without post-norm keeps it
      exactly 1; live branches with ``none``/``pre``/``rmsnorm``: ``theory.transformer_stream``,
      whose input is the data's chance that two positions share a token (``token_match_rate``:
      the recall task; not given for data without known token statistics: the attention
      branch's variance depends on how correlated the positions are).

    alpha includes ``init.parametrization=depth_mup``'s branch multiplier, the attention scale
    is ``transformer.attention_scale``'s (mup and depth_mup set it), and fc1 and fc2 take their
    own sigma_w2 (``kernel_sigma_w2``: they differ from a square kernel's under fan_avg or
    orthogonal draws).
    """
    depth, residual, norm = int(trial["model.depth"]), trial["init.residual"], trial["model.norm"]
    s = residual_scales(residual, depth)
    alpha = s.alpha * trial_branch_multiplier(trial)
    gated = residual in ("skipinit", "rezero")
    q0 = 2.0 * float(trial["init.embedding_std"]) ** 2 * embedding_var(residual, depth)
    d, scale = int(trial["model.width"]) // int(trial["model.heads"]), attention_scale(trial)
    stream = _trial_stream(trial, sigma_w2, sigma_b2)
    if norm in ("pre", "rmsnorm"):
        q_in = [1.0] * depth
    elif norm == "post":
        q_in = [q0] + [1.0] * (depth - 1)
    elif gated or depth == 1:
        q_in = [q0] * depth
    else:
        q_in = None if stream is None else list(stream.attention_in)
    out = {}
    if q_in is not None:
        stds = [attention_logit_std(d, scale, sigma_w2, sigma_b2, q) for q in q_in]
        out["theory.logit_std"] = float(np.mean(stds))
    if q0 > 0 and norm == "post":
        fc1, fc2 = _fc_sigma_w2(trial)
        v = branch_var(
            trial["model.activation"],
            1.0,
            s.w1_var * fc1,
            s.w2_var * fc2,
            sigma_b2,
            float(trial["model.negative_slope"]),
        )
        out["theory.stream_var_ratio"] = (s.skip**2 + alpha**2 * v) / q0
    elif gated:
        out["theory.stream_var_ratio"] = 1.0
    elif stream is not None:
        out["theory.stream_var_ratio"] = float(stream.stream_var_ratio)
    return out
