"""Signal-propagation diagnostics, measured inside the compiled training call.

On a fixed probe batch (the first validation samples, so every boundary is comparable), one
forward and backward pass of the trial's own model reads, for each hidden layer l:

- the forward signal: mean and variance of the activations h_l, and q_l = E[pre_l^2], the
  pre-activation length that the mean-field theory (``pipeline.core.theory``) predicts;
- the back-propagated signal ||dL/dh_l||, taken from Flax ``perturb`` points on each layer's
  output, and the weight gradient ||dL/dW_l|| (output layer included);
- dead units (rectifiers: input <= 0 for every probe sample) and saturated units (bounded
  activations: output within 1% of the range from a bound);
- unit spread: how different the units of a layer are (std across units over rms, averaged
  over samples). 0 means every unit computes the same thing: the symmetry of a constant
  initialization, which gradient descent never breaks because every unit gets the same update.

A residual MLP's layers are its input layer and its blocks: a block's pre-activation is its
branch's hidden one (fc1), its output and ||dL/dh|| are the residual stream's after the block, its
weight norms those of both branch kernels together, and ``stream_ms`` the stream's mean square
(before a post-norm, as ``theory.residual_stream`` predicts it; the input layer's: the stream
entering the first block). A transformer's layers are its embedding and its blocks, read the same
way (``_transformer_probe``), plus each block's attention entropy and logit std, from the logits
the model sows (nothing is sown in training: the collection is not mutable there).

Why both gradients: in a bias-free ReLU network dL/dW_l = h_{l-1}^T dL/dpre_l, and a small gain
shrinks h going forward exactly as much as dL/dpre grows going backward, so the per-layer weight
gradients stay level whatever the gain. The back-propagated signal and the absolute norms are
what reveal a vanishing or exploding network (He et al. 2015, sec. 2.2).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from pipeline.core import losses
from pipeline.core.activations import ACTIVATIONS, activate, names_of
from pipeline.core.model import Residual
from pipeline.core.net import Net, flatten, kernel_norms


class Probe(NamedTuple):
    """One network's diagnostics; per-layer arrays cover the whole stack (mask them by depth)."""

    act_mean: jax.Array  # [layers]
    act_var: jax.Array  # [layers]
    pre_q: jax.Array  # [layers] mean squared pre-activation (the mean-field q_l)
    backprop_norm: jax.Array  # [layers] ||dL/dh_l||
    weight_grad_norm: jax.Array  # [layers + 1] ||dL/dW_l||, output layer last
    weight_norm: jax.Array  # [layers + 1] ||W_l||, output layer last
    dead_fraction: jax.Array  # [layers]
    saturated_fraction: jax.Array  # [layers]
    unit_spread: jax.Array  # [layers] 0 = all units identical
    stream_ms: jax.Array | None = None  # [layers] residual MLP: the stream's mean square
    attention_entropy: jax.Array | None = None  # [layers] transformer: rows' entropy / ln T
    logit_std: jax.Array | None = None  # [layers] transformer: std of the attention logits


PROBE_FIELDS = Probe._fields
STACKS = ("hidden", "blocks")  # the scanned stack of the MLP / CNN, of the residual MLP


def _layers(tree: dict, name: str) -> jax.Array:
    """Stack a per-layer value of the input layer and the scanned stack: [layers, ...]."""
    first = tree[name]
    first = first[0] if isinstance(first, tuple) else first
    parts = [first[None]]
    for stack in (s for s in STACKS if s in tree):
        rest = tree[stack][name]
        parts.append(rest[0] if isinstance(rest, tuple) else rest)
    return jnp.concatenate(parts)


def _layer_norms(tree: dict, net: Net) -> jax.Array:
    """||W_l|| per layer, read-out last; a residual block's branch kernels count as one (a
    transformer's six), a transformer's embedding is its two tables."""
    kind = net.builtin.structure.kind
    if kind not in ("resmlp", "transformer"):
        return kernel_norms(tree, net.layout)
    flat = flatten(tree)

    def squares(path: str) -> jax.Array:  # per layer of a stacked kernel
        return jnp.sum(flat[path].reshape(flat[path].shape[0], -1) ** 2, axis=1)

    def norm(*paths: str) -> jax.Array:
        return jnp.sqrt(sum(jnp.sum(flat[p] ** 2) for p in paths))[None]

    if kind == "transformer":
        kernels = [f"blocks/attn/{n}/kernel" for n in ("query", "key", "value", "out")]
        kernels += ["blocks/mlp/fc1/kernel", "blocks/mlp/fc2/kernel"]
        first = norm("embed/embedding", "pos/embedding")
    else:
        kernels, first = ["blocks/fc1/kernel", "blocks/fc2/kernel"], norm("input/kernel")
    blocks = jnp.sqrt(sum(squares(p) for p in kernels))
    return jnp.concatenate([first, blocks, norm("output/kernel")])


def measure(
    net: Net,
    params: dict,
    x: jax.Array,
    y: jax.Array,
    depth: jax.Array,
    slope: jax.Array,
    residual: Residual | None = None,
    attention_scale: jax.Array | None = None,
    activation_index: jax.Array | None = None,
) -> Probe:
    """Diagnostics of one built-in network (``net.builtin``) on the probe batch ``(x, y)``
    (``residual``: a residual network's forward constants; ``attention_scale``: a
    transformer's)."""
    model = net.builtin
    extra = {} if residual is None else {"residual": residual}
    if attention_scale is not None:
        extra["attention_scale"] = attention_scale
    if activation_index is not None:  # a merged structure's: the row's activation
        extra["activation_index"] = activation_index

    def loss_fn(params, perturbations):
        variables = {"params": params, "perturbations": perturbations}
        logits, state = model.apply(variables, x, depth, slope, mutable=["intermediates"], **extra)
        loss = losses.loss(logits, y)
        return loss, state["intermediates"]

    shapes = jax.eval_shape(
        lambda: model.apply(
            {"params": params}, x, depth, slope, mutable=["perturbations"], **extra
        )[1]
    )["perturbations"]
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    (_, inter), (grads, back) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
        params, zeros
    )
    activation = model.structure.activation
    if model.structure.kind == "transformer":
        return _transformer_probe(net, params, grads, inter, back, activation, slope)
    # [layers, samples, units]: a CNN's positions count as samples of its channels.
    pre = _layers(inter, "pre")
    pre = pre.reshape(pre.shape[0], -1, pre.shape[-1])
    back = _layers(back, "h").reshape(pre.shape)  # dL/dh_l
    return Probe(
        **_unit_signal(
            pre, activate(activation, pre, slope, activation_index), activation, activation_index
        ),
        backprop_norm=jnp.sqrt(jnp.sum(back * back, axis=(1, 2))),
        weight_grad_norm=_layer_norms(grads, net),
        weight_norm=_layer_norms(params, net),
        stream_ms=jnp.mean(_layers(inter, "stream") ** 2, axis=(1, 2))
        if residual is not None
        else None,
    )


def _unit_signal(
    pre: jax.Array, h: jax.Array, activation: str | None, which: jax.Array | None = None
) -> dict[str, jax.Array]:
    """``act_mean``, ``act_var``, ``pre_q``, ``dead_fraction``, ``saturated_fraction`` and
    ``unit_spread`` per layer of ``pre`` and ``h = phi(pre)``, both [layers, samples, units]
    (``activation``: a structure's, merged ones picked by ``which``; None: a layer without a
    nonlinearity, neither dead nor saturated)."""
    zero = jnp.zeros(pre.shape[0])
    kinds = [ACTIVATIONS[n] for n in names_of(activation)] if activation is not None else []
    rectifier = [a.rectifier for a in kinds]
    dead = jnp.mean(jnp.all(pre <= 0, axis=1), axis=-1) if any(rectifier) else zero
    if any(rectifier) and not all(rectifier):  # merged: only the rows of a rectifier
        dead = jnp.where(jnp.asarray(rectifier)[which], dead, zero)
    bounds = [a.bounds for a in kinds]
    if len(kinds) == 1 and bounds[0] is not None:
        low, high = bounds[0]
    elif any(b is not None for b in bounds):  # merged: the row's bounds ((0, 1) if none)
        low = jnp.asarray([(b or (0.0, 1.0))[0] for b in bounds])[which]
        high = jnp.asarray([(b or (0.0, 1.0))[1] for b in bounds])[which]
    if any(b is not None for b in bounds):
        position = (h - low) / (high - low)
        saturated = jnp.mean((position < 0.01) | (position > 0.99), axis=(1, 2))
        bounded = [b is not None for b in bounds]
        if not all(bounded):
            saturated = jnp.where(jnp.asarray(bounded)[which], saturated, zero)
    else:
        saturated = zero
    spread = jnp.mean(jnp.std(h, axis=2), axis=1) / (jnp.sqrt(jnp.mean(h * h, axis=(1, 2))) + 1e-30)
    return dict(
        act_mean=jnp.mean(h, axis=(1, 2)),
        act_var=jnp.var(h, axis=(1, 2)),
        pre_q=jnp.mean(pre * pre, axis=(1, 2)),
        dead_fraction=dead,
        saturated_fraction=saturated,
        unit_spread=spread,
    )


def _transformer_probe(net: Net, params, grads, inter, back, activation, slope) -> Probe:
    """A transformer's layers: its embedding (x_0 = tokens + positions, no nonlinearity: its
    "pre-activation" and activation are x_0 itself) and its blocks (the MLP's hidden layer,
    fc1, as the block's pre-activation; ||dL/dh|| and the stream after the block). Attention,
    per block: the entropy of each softmax row over ln T (1: uniform over the T positions, 0:
    one-hot), averaged over samples, heads and rows, and the std of the logits over samples,
    heads, queries and keys; the embedding's entries are NaN."""

    def flat(a: jax.Array) -> jax.Array:  # [layers, samples x positions, units]
        return a.reshape(a.shape[0], -1, a.shape[-1])

    stream = _layers(inter, "stream")  # [1 + blocks, batch, T, width]
    x0 = flat(stream[:1])
    pre = flat(inter["blocks"]["mlp"]["pre"][0])
    embedding = _unit_signal(x0, x0, None)
    blocks = _unit_signal(pre, activate(activation, pre, slope), activation)
    back = flat(_layers(back, "h"))
    logits = inter["blocks"]["attn"]["logits"][0]  # [blocks, batch, heads, T, T]
    t = logits.shape[-1]
    p = jax.nn.softmax(logits, axis=-1)
    entropy = -jnp.sum(p * jax.nn.log_softmax(logits, axis=-1), axis=-1) / jnp.log(t)
    nan = jnp.full((1,), jnp.nan)
    return Probe(
        **{k: jnp.concatenate([embedding[k], blocks[k]]) for k in embedding},
        backprop_norm=jnp.sqrt(jnp.sum(back * back, axis=(1, 2))),
        weight_grad_norm=_layer_norms(grads, net),
        weight_norm=_layer_norms(params, net),
        stream_ms=jnp.mean(stream * stream, axis=(1, 2, 3)),
        attention_entropy=jnp.concatenate([nan, jnp.mean(entropy, axis=(1, 2, 3))]),
        logit_std=jnp.concatenate([nan, jnp.std(logits, axis=(1, 2, 3, 4))]),
    )
