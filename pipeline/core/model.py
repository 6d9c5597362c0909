"""The network a trial trains: a Flax MLP, small CNN or residual MLP whose hidden layers (or
blocks) are one scanned, stacked block (the transformer, built the same way from this module's
pieces: ``pipeline.core.transformer``).

Stacking the hidden layers and scanning over them makes compile time independent of depth, and a
traced ``depth`` masks the tail of the stack so trials of different depths share one executable:
a masked layer passes its input through unchanged, so the network is exactly the shallower one.

Each layer also ``sow``s its pre-activation and marks its output with ``perturb``: both are
no-ops in training (the collections are not passed), and let ``pipeline.core.diagnostics`` read the
forward signal and the back-propagated gradient dL/dh of every layer from this same model.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from pipeline.core.activations import activate
from pipeline.core.names import BUILTIN_KINDS, KINDS, RESIDUAL_KINDS  # noqa: F401 (model.KINDS)
from pipeline.core.residual import embedding_var, residual_scales


class Structure(NamedTuple):
    """What one executable is compiled for; trials that share it train in one call."""

    activation: str
    n_hidden: int  # hidden layers in the stack (the deepest trial of the group)
    width: int
    n_in: int
    n_classes: int
    kind: str = "mlp"  # mlp | cnn (3x3 same-padded convolutions on square images, then a
    # global average pool and a dense read-out) | custom (a user's module)
    factory: str | None = None  # custom: model.factory, the <module>:<function> that builds it
    norm: str = "none"  # resmlp, transformer: model.norm (none | pre | rmsnorm | post)
    heads: int = 1  # transformer: model.heads (d_model = width, head dimension width / heads)
    vocab: int = 0  # transformer: token vocabulary of the data (0: float features, n_in of them)


KERNEL = (3, 3)  # the CNN's window: fans are 9 x channels (the receptive field)


def _patches(x: jax.Array) -> jax.Array:
    """Each position's 3x3 neighbourhood (zero-padded) as one vector: channel block i * 3 + j
    is the input shifted by (i - 1, j - 1), the row order of a (3, 3, c, f) kernel reshaped to
    (9 c, f), so ``_patches(x) @ kernel.reshape(9 * c, f)`` is the SAME convolution (im2col:
    Chellapilla, Puri & Simard 2006, "High performance convolutional neural networks for
    document processing")."""
    height, width = x.shape[-3:-1]
    xp = jnp.pad(x, [(0, 0)] * (x.ndim - 3) + [(1, 1), (1, 1), (0, 0)])
    return jnp.concatenate(
        [xp[..., i : i + height, j : j + width, :] for i in range(3) for j in range(3)], -1
    )


@jax.custom_vjp
def conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """A SAME 3x3 convolution of ``x`` (..., height, width, channels) with a (3, 3, c, f)
    kernel, computed as matrix multiplies of patches, whose gradient keeps only ``x``.

    XLA's CPU backend runs a convolution's gradient inside a loop (the scanned layer stack) and a
    vmapped convolution (rows with their own kernels: a grouped convolution) far slower than the
    same sums as matrix multiplies. One gradient step of 8 vmapped rows of a depth-4, width-64
    stack on 8x8 images, batch 128: 42.4 s with XLA's convolution, 0.98 s with patches (the
    forward pass alone: 1.02 s against 0.34 s). Autodiff of the patch product would keep every
    layer's patches for the backward pass, 9x the activations; this keeps the input and rebuilds
    one layer's patches at a time.
    """
    return _patches(x) @ kernel.reshape(-1, kernel.shape[-1])


def _conv3x3_fwd(x, kernel):
    return conv3x3(x, kernel), (x, kernel)


def _conv3x3_bwd(saved, dy):
    x, kernel = saved
    # dL/dx is the SAME convolution of dy with the kernel flipped in space, in and out swapped.
    dx = conv3x3(dy, jnp.flip(kernel, (0, 1)).swapaxes(2, 3))
    dkernel = jnp.einsum("...k,...o->ko", _patches(x), dy).reshape(kernel.shape)
    return dx, dkernel.astype(kernel.dtype)


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)


class PatchConv(nn.Conv):
    """``nn.Conv(features, KERNEL, padding="SAME")``'s parameters and values (to float32
    rounding), computed by ``conv3x3``. A subclass, so every reader of layer types (fans,
    captures) sees a convolution."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ones = (None, 1, (1, 1))
        plain = self.feature_group_count == 1 and all(
            v in ones for v in (self.strides, self.input_dilation, self.kernel_dilation)
        )
        if tuple(self.kernel_size) != KERNEL or self.padding != "SAME" or not plain:
            raise ValueError(
                "PatchConv is a 3x3, SAME-padded, stride-1 convolution; use nn.Conv for "
                f"kernel_size={self.kernel_size}, padding={self.padding!r}, strides={self.strides}"
            )
        shape = (*KERNEL, x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        return conv3x3(x, kernel) + bias


def _linear(kind: str, features: int, name: str) -> nn.Module:
    """A layer's linear map; named like a dense layer either way so every consumer of the
    parameter tree (initial weights, LSUV, diagnostics, export) reads one layout."""
    if kind == "cnn":
        return PatchConv(features, KERNEL, padding="SAME", name=name)
    return nn.Dense(features, name=name)


def apply_dropout(module: nn.Module, y: jax.Array, rate: jax.Array | None) -> jax.Array:
    """Inverted dropout with a traced rate (``nn.Dropout`` needs a Python one); ``rate=None``
    (evaluation, or no trial of the call uses dropout) compiles no random numbers at all."""
    if rate is None:
        return y
    keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - rate, y.shape)
    return jnp.where(keep, y / (1.0 - rate), 0.0)


class _HiddenLayer(nn.Module):
    width: int
    activation: str
    kind: str = "mlp"

    @nn.compact
    def __call__(self, carry, depth, slope, dropout, which=None):
        h, index = carry
        pre = _linear(self.kind, self.width, "dense")(h)
        self.sow("intermediates", "pre", pre)
        y = self.perturb("h", activate(self.activation, pre, slope, which))
        y = apply_dropout(self, y, dropout)
        # Layer `index` of the stack is hidden layer index + 2 (the input layer is the first).
        h = jnp.where(index + 2 <= depth, y, h)
        return (h, index + 1), None


class MLP(nn.Module):
    """``depth`` hidden layers of ``width`` units, then a linear read-out to the classes."""

    structure: Structure
    unroll: int = 1

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        depth: jax.Array,
        slope: jax.Array,
        dropout: jax.Array | None = None,
        activation_index: jax.Array | None = None,
    ) -> jax.Array:
        s = self.structure
        which = activation_index  # a merged structure's: the row's activation (activations.py)
        if s.kind == "cnn":  # flat pixels -> (batch, side, side, 1)
            side = math.isqrt(s.n_in)
            x = x.reshape(*x.shape[:-1], side, side, 1)
        pre = _linear(s.kind, s.width, "input")(x)
        self.sow("intermediates", "pre", pre)
        h = apply_dropout(
            self, self.perturb("h", activate(s.activation, pre, slope, which)), dropout
        )
        if s.n_hidden > 1:
            stack = nn.scan(
                _HiddenLayer,
                variable_axes={"params": 0, "intermediates": 0, "perturbations": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast,) * 4,
                length=s.n_hidden - 1,
                unroll=self.unroll,
            )
            (h, _), _ = stack(s.width, s.activation, s.kind, name="hidden")(
                (h, 0), depth, slope, dropout, which
            )
        if s.kind == "cnn":
            h = jnp.mean(h, axis=(-3, -2))  # global average pool over positions
        return nn.Dense(s.n_classes, name="output")(h)


# --- The residual MLP (model.kind=resmlp, issue 13) ----------------------------------------------
#
# x_0 = LayerNorm(phi(W_in x + b_in)): the stream enters the first block with mean square 1
# whatever the data's scale (BERT normalizes its embeddings so, Devlin et al. 2019), which is
# theory's q_0 = 1 (``pipeline.core.theory.residual_stream``). Then ``depth`` blocks
#     u = skip x + alpha B(x),   B(x) = fc2(phi(fc1(N(x)))),   x <- u, or LayerNorm(u) (post),
# N = LayerNorm (pre), RMSNorm (rmsnorm) or nothing, and a dense read-out of the last x.

GATED = ("skipinit", "rezero")  # alpha is each block's learnable scalar, 0 at init
# Globs of a branch's layers: the built-in stack (blocks/fc1/kernel) and a module with one block
# per layer (blocks/0/fc1/kernel; blocks.0.fc1 in PyTorch) alike.
BRANCH_IN, BRANCH_OUT = "blocks*/fc1/kernel", "blocks*/fc2/kernel"
READOUT = ("output/kernel", "output/bias")
# A transformer block has two branches, attention and MLP: the layers a residual rule scales as
# a branch's first (value projection, fc1) and last (output projection, fc2), and the tables
# init.embedding_std draws (``pipeline.core.transformer``).
T_BRANCH_IN = ("blocks*/attn/value/kernel", "blocks*/mlp/fc1/kernel")
T_BRANCH_OUT = ("blocks*/attn/out/kernel", "blocks*/mlp/fc2/kernel")
EMBEDDINGS = ("embed/embedding", "pos/embedding")


class Residual(NamedTuple):
    """A residual MLP's forward constants per row (``init.residual``): u = skip x + alpha B(x)."""

    alpha: jax.Array  # the branch multiplier (``residual.residual_scales``, depth-muP's factor)
    skip: jax.Array  # the identity path's multiplier (DeepNet's alpha, Wang et al. 2022)
    gated: jax.Array  # bool: each block's learnable gate times alpha is the multiplier instead


def _norm(kind: str) -> nn.Module:
    return nn.RMSNorm(name="norm") if kind == "rmsnorm" else nn.LayerNorm(name="norm")


class _Block(nn.Module):
    width: int
    activation: str
    norm: str

    @nn.compact
    def __call__(self, carry, depth, slope, dropout, residual: Residual, which=None):
        x, index = carry
        x_in = _norm(self.norm)(x) if self.norm in ("pre", "rmsnorm") else x
        pre = nn.Dense(self.width, name="fc1")(x_in)
        self.sow("intermediates", "pre", pre)
        h = apply_dropout(self, activate(self.activation, pre, slope, which), dropout)
        branch = nn.Dense(self.width, name="fc2")(h)
        # SkipInit (De & Smith 2020) and ReZero (Bachlechner et al. 2020): a learnable scalar
        # that starts at 0 (times alpha, depth-muP's branch multiplier, else 1); every other
        # rule multiplies by its constant alpha and leaves the gate unused.
        gate = self.param("gate", nn.initializers.zeros, ())
        u = (
            residual.skip * x
            + jnp.where(residual.gated, gate * residual.alpha, residual.alpha) * branch
        )
        self.sow("intermediates", "stream", u)  # before a post-norm: what theory predicts
        y = self.perturb("h", _norm(self.norm)(u) if self.norm == "post" else u)
        # Block `index` is real while index < depth; a masked one passes the stream through.
        return (jnp.where(index < depth, y, x), index + 1), None


class ResMLP(nn.Module):
    """An input layer, ``depth`` residual blocks of ``width`` units, a linear read-out."""

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
        activation_index: jax.Array | None = None,
    ) -> jax.Array:
        s = self.structure
        which = activation_index  # a merged structure's: the row's activation (activations.py)
        residual = residual if residual is not None else Residual(1.0, 1.0, False)
        pre = nn.Dense(s.width, name="input")(x)
        self.sow("intermediates", "pre", pre)
        h = nn.LayerNorm(name="input_norm")(activate(s.activation, pre, slope, which))
        self.sow("intermediates", "stream", h)
        stack = nn.scan(
            _Block,
            variable_axes={"params": 0, "intermediates": 0, "perturbations": 0},
            split_rngs={"params": True, "dropout": True},
            in_axes=(nn.broadcast,) * 5,
            length=s.n_hidden,
            unroll=self.unroll,
        )
        (h, _), _ = stack(s.width, s.activation, s.norm, name="blocks")(
            (self.perturb("h", h), 0), depth, slope, dropout, residual, which
        )
        return nn.Dense(s.n_classes, name="output")(h)


def probed_layers(kind: str, depth: int) -> int:
    """Layers the diagnostics read in a trial: an MLP's depth counts its input layer; a residual
    MLP has its input layer and ``depth`` blocks, a transformer its embedding and ``depth``
    blocks."""
    return depth + 1 if kind in RESIDUAL_KINDS else depth


def generated_rules(
    residual: str,
    readout: str,
    depth: int | None,
    kind: str = "resmlp",
    embedding_std: float | None = None,
) -> list[dict]:
    """The ``init.rules`` that ``init.residual``, ``init.readout`` and (transformer)
    ``init.embedding_std`` stand for: each branch layer's variance factor from
    ``residual.residual_scales`` as a ``scale`` (its square root, a std; 0 zeroes the layer,
    Fixup's last one), a zero read-out, kernel and bias (logits 0: the initial loss is exactly
    ln(classes)), and the embedding tables' std (their own draw is N(0, 1); T-Fixup scales it)."""
    rules = []
    s = residual_scales(residual, depth) if residual != "none" else None
    if s is not None:
        transformer = kind == "transformer"
        first = T_BRANCH_IN if transformer else (BRANCH_IN,)
        last = T_BRANCH_OUT if transformer else (BRANCH_OUT,)
        layers = [(g, s.w1_var) for g in first] + [(g, s.w2_var) for g in last]
        rules += [{"match": g, "scale": math.sqrt(v)} for g, v in layers if v != 1.0]
    if kind == "transformer" and embedding_std is not None:
        std = embedding_std * math.sqrt(embedding_var(residual, depth))
        rules += [{"match": glob, "scale": std} for glob in EMBEDDINGS]
    if readout == "zero":
        rules += [{"match": glob, "scale": 0.0} for glob in READOUT]
    return rules


def rules_in_force(
    rules,
    residual: str,
    readout: str,
    depth: int | None,
    kind: str = "resmlp",
    embedding_std: float | None = None,
) -> list[dict]:
    """A trial's ``init.rules`` followed by the generated ones, which therefore win."""
    return [*(rules or []), *generated_rules(residual, readout, depth, kind, embedding_std)]


def layer_shapes(structure) -> dict[str, tuple[int, ...]]:
    """Kernel shape of each layer kind, from which fans and initial scales are computed
    (``structure``: a ``Structure`` or anything with its shape fields)."""
    s = structure
    if s.kind == "cnn":
        return {
            "input": (*KERNEL, 1, s.width),
            "hidden": (*KERNEL, s.width, s.width),
            "output": (s.width, s.n_classes),
        }
    return {
        "input": (s.n_in, s.width),
        "hidden": (s.width, s.width),
        "output": (s.width, s.n_classes),
    }


def count_flops(depth: int, width: int, n_in: int, n_classes: int, batch: int) -> int:
    """Multiply-add FLOPs of one forward and backward pass (backward = 2x forward)."""
    macs = n_in * width + (depth - 1) * width * width + width * n_classes
    return 6 * batch * macs
