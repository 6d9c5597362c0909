"""The transformer (``model.kind=transformer``, issue 13): a small bidirectional encoder over
token sequences, built like the residual MLP (``pipeline.core.model``): one scanned block stack
whose traced ``depth`` masks its tail, so trials of different depths share one executable.

    x_0 = E[tokens] + P[positions]          (token and learned position tables, each N(0, 1) as
                                             drawn, times init.embedding_std: a rule's scale)
    block l, for each branch B in (attention, MLP):
        u = skip x + alpha B(N(x)),  x <- u, or LayerNorm(u) with model.norm=post
    logits = output(N_final(x_L)[last position])

- ``d_model`` is ``model.width``: one width key across kinds, so width-dependent rules (muP's
  ``model.base_width``, a rule's ``width`` formula) read the same number. ``model.heads`` splits
  it; the head dimension is d = width / heads.
- Attention is bidirectional (an encoder: every position sees every other one), the read-out
  reads the last position (the query of ``data.name=recall``).
- Attention: q, k, v = the ``query``, ``key``, ``value`` dense layers, logits = scale q.k per head,
  softmax over keys, then the ``out`` projection. ``scale`` is ``model.attention_scale``: 1/sqrt(d)
  (Vaswani et al. 2017, sec. 3.2.1: q.k of unit-variance q, k has variance d), 1/d (muP, Yang et
  al. 2022: q and k become correlated during training, so q.k grows like d, not sqrt(d)) or 1;
  a traced number per row (``attention_scale``), so the three share one executable.
- MLP: ``fc1`` (4 x width) -> the trial's activation (dropout after it while training) -> ``fc2``.
- ``model.norm``: ``pre`` (LayerNorm on each branch's input and a final LayerNorm before the
  read-out, GPT-2), ``rmsnorm`` (the same with RMSNorm), ``post`` (LayerNorm after each sum, the
  original transformer), ``none``.
- Parameter paths: ``embed/embedding``, ``pos/embedding``, ``blocks/attn/{query,key,value,out}``,
  ``blocks/mlp/{fc1,fc2}``, ``blocks/{attn,mlp}_norm``, ``blocks/gate``, ``final_norm``,
  ``output``: the globs of ``init.rules`` and of the generated rules
  (``pipeline.core.model.generated_rules``) target them.
- SkipInit / ReZero: one learnable gate per block, 0 at init, multiplies both of its branches
  (as ReZero's reference transformer layer does with its single ``resweight``).

T-Fixup (Huang et al. 2020, "Improving Transformer Optimization Through Better Initialization",
sec. 3.2), as we read it, stated with its uncertainty: remove LayerNorm (and warmup); Xavier for
every weight except the input embeddings, which are N(0, d^(-1/2)); scale the decoder's value
and output projections, its MLP weights and the input embeddings of encoder and decoder by
(9 N_d)^(-1/4); scale the encoder's value and output projections and MLP weights by
0.67 N_e^(-1/4). For this encoder-only model we use N = model.depth for both: branch layers
x 0.67 N^(-1/4), embeddings x (9N)^(-1/4) (the paper has no decoder-free embedding constant; this
is the reading the issue suggests). Not certain: whether the paper's N(0, d^(-1/2)) is a variance
or a std (fairseq, its code base, draws embeddings with std d^(-1/2)), and the positions (the
paper's are sinusoidal, not scaled; ours are learned and scaled like the tokens). The trial's
``init.weights`` stands for "Xavier" (set glorot_normal or xavier_uniform to match the paper) and
``init.embedding_std`` for the embeddings' base std (width^-0.5 to match fairseq).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from pipeline.core.activations import ACTIVATIONS
from pipeline.core.model import Residual, Structure, apply_dropout
from pipeline.core.names import ATTENTION_SCALES  # noqa: F401 (transformer.ATTENTION_SCALES)

MLP_RATIO = 4  # the MLP's hidden width over d_model (Vaswani et al. 2017: 2048 / 512)


def logit_scale(name: str, head_dim: int) -> float:
    """The number ``model.attention_scale`` multiplies q.k by, for heads of dimension d."""
    if name == "1/sqrt(d)":
        return 1.0 / math.sqrt(head_dim)
    if name == "1/d":
        return 1.0 / head_dim
    if name == "none":
        return 1.0
    raise ValueError(
        f"model.attention_scale={name!r}: expected one of {', '.join(ATTENTION_SCALES)}"
    )


def attention_scale(trial: Mapping[str, Any]) -> float:
    """A trial's attention logit scale (one place: rows and theory read it).

    Under ``init.parametrization`` mup or depth_mup the parametrization sets it, whatever
    ``model.attention_scale`` says: 1/d (Yang et al. 2022, Tensor Programs V, section 4 and
    Table 3: q.k of two correlated d-vectors grows like d once training aligns them, not
    sqrt(d)), written relative to the base width like every muP multiplier, sqrt(d_base) / d, so
    that at ``model.base_width`` it is SP's 1/sqrt(d) (the mup library's ``attn_mult`` plays the
    same part)."""
    heads = int(trial["model.heads"])
    head_dim = int(trial["model.width"]) // heads
    if trial.get("init.parametrization", "sp") in ("mup", "depth_mup"):
        base = trial.get("model.base_width") or trial["model.width"]
        return math.sqrt(int(base) // heads) / head_dim
    return logit_scale(trial["model.attention_scale"], head_dim)


def _norm(kind: str, name: str) -> nn.Module:
    return nn.RMSNorm(name=name) if kind == "rmsnorm" else nn.LayerNorm(name=name)


class _Attention(nn.Module):
    width: int
    heads: int

    @nn.compact
    def __call__(self, x: jax.Array, scale: jax.Array) -> jax.Array:
        d = self.width // self.heads

        def project(name: str) -> jax.Array:  # (..., T, heads, d)
            return nn.Dense(self.width, name=name)(x).reshape(*x.shape[:-1], self.heads, d)

        q, k, v = project("query"), project("key"), project("value")
        logits = scale * jnp.einsum("...qhd,...khd->...hqk", q, k)
        # Read by the diagnostics (entropy, logit std); a no-op unless "intermediates" is mutable.
        self.sow("intermediates", "logits", logits)
        weights = jax.nn.softmax(logits, axis=-1)
        mixed = jnp.einsum("...hqk,...khd->...qhd", weights, v).reshape(x.shape)
        return nn.Dense(self.width, name="out")(mixed)


class _Mlp(nn.Module):
    width: int
    activation: str

    @nn.compact
    def __call__(self, x: jax.Array, slope, dropout) -> jax.Array:
        pre = nn.Dense(MLP_RATIO * self.width, name="fc1")(x)
        self.sow("intermediates", "pre", pre)
        h = apply_dropout(self, ACTIVATIONS[self.activation].fn(pre, slope), dropout)
        return nn.Dense(self.width, name="fc2")(h)


class _Block(nn.Module):
    width: int
    heads: int
    activation: str
    norm: str

    @nn.compact
    def __call__(self, carry, depth, slope, dropout, residual: Residual, scale):
        x, index = carry
        # SkipInit / ReZero: a learnable scalar at 0 (times alpha, depth-muP's branch
        # multiplier); other rules leave it unused (model.py).
        gate = self.param("gate", nn.initializers.zeros, ())
        alpha = jnp.where(residual.gated, gate * residual.alpha, residual.alpha)
        pre_norm = self.norm in ("pre", "rmsnorm")

        def add(x, branch, name):
            """One residual sum: (its output, the sum before a post-norm)."""
            u = residual.skip * x + alpha * branch(_norm(self.norm, name)(x) if pre_norm else x)
            return (_norm(self.norm, name)(u) if self.norm == "post" else u), u

        attention = _Attention(self.width, self.heads, name="attn")
        mlp = _Mlp(self.width, self.activation, name="mlp")
        y, _ = add(x, lambda h: attention(h, scale), "attn_norm")
        y, u = add(y, lambda h: mlp(h, slope, dropout), "mlp_norm")
        self.sow("intermediates", "stream", u)  # before a post-norm: what theory predicts
        y = self.perturb("h", y)
        # Block `index` is real while index < depth; a masked one passes the stream through.
        return (jnp.where(index < depth, y, x), index + 1), None


class Transformer(nn.Module):
    """Token and position embeddings, ``depth`` encoder blocks, a read-out of the last position."""

    structure: Structure
    unroll: int = 1

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        depth: jax.Array,
        slope: jax.Array,
        dropout: jax.Array | None = None,
        residual: Residual | None = None,
        attention_scale: jax.Array | None = None,
    ) -> jax.Array:
        s = self.structure
        residual = residual if residual is not None else Residual(1.0, 1.0, False)
        if attention_scale is None:
            attention_scale = logit_scale("1/sqrt(d)", s.width // s.heads)
        # N(0, 1) as drawn: init.embedding_std is their scale (a generated rule).
        table = nn.initializers.normal(1.0)
        tokens = nn.Embed(s.vocab, s.width, embedding_init=table, name="embed")(x)
        positions = nn.Embed(s.n_in, s.width, embedding_init=table, name="pos")(
            jnp.arange(x.shape[-1])
        )
        h = tokens + positions
        self.sow("intermediates", "stream", h)  # the stream entering the first block
        stack = nn.scan(
            _Block,
            variable_axes={"params": 0, "intermediates": 0, "perturbations": 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=(nn.broadcast,) * 5,
            length=s.n_hidden,
            unroll=self.unroll,
        )
        (h, _), _ = stack(s.width, s.heads, s.activation, s.norm, name="blocks")(
            (self.perturb("h", h), 0), depth, slope, dropout, residual, attention_scale
        )
        if s.norm in ("pre", "rmsnorm"):  # pre-norm leaves the stream unnormalized: GPT-2's ln_f
            h = _norm(s.norm, "final_norm")(h)
        return nn.Dense(s.n_classes, name="output")(h[..., -1, :])
