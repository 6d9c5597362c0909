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
from pipeline.core.activations import ACTIVATIONS
from pipeline.core.net import Net, kernel_norms


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


PROBE_FIELDS = Probe._fields


def _layers(tree: dict, name: str) -> jax.Array:
    """Stack a per-layer value of the input layer and the scanned hidden stack: [layers, ...]."""
    first = tree[name]
    first = first[0] if isinstance(first, tuple) else first
    parts = [first[None]]
    if "hidden" in tree:
        rest = tree["hidden"][name]
        parts.append(rest[0] if isinstance(rest, tuple) else rest)
    return jnp.concatenate(parts)


def measure(
    net: Net, params: dict, x: jax.Array, y: jax.Array, depth: jax.Array, slope: jax.Array
) -> Probe:
    """Diagnostics of one built-in network (``net.builtin``) on the probe batch ``(x, y)``."""
    model = net.builtin

    def loss_fn(params, perturbations):
        variables = {"params": params, "perturbations": perturbations}
        logits, state = model.apply(variables, x, depth, slope, mutable=["intermediates"])
        loss = losses.loss(logits, y)
        return loss, state["intermediates"]

    shapes = jax.eval_shape(
        lambda: model.apply({"params": params}, x, depth, slope, mutable=["perturbations"])[1]
    )["perturbations"]
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    (_, inter), (grads, back) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(
        params, zeros
    )
    # [layers, samples, units]: a CNN's positions count as samples of its channels.
    pre = _layers(inter, "pre")
    pre = pre.reshape(pre.shape[0], -1, pre.shape[-1])
    back = _layers(back, "h").reshape(pre.shape)  # dL/dh_l
    activation = ACTIVATIONS[model.structure.activation]
    h = activation.fn(pre, slope)
    zero = jnp.zeros(pre.shape[0])
    dead = jnp.mean(jnp.all(pre <= 0, axis=1), axis=-1) if activation.rectifier else zero
    if activation.bounds is not None:
        low, high = activation.bounds
        position = (h - low) / (high - low)
        saturated = jnp.mean((position < 0.01) | (position > 0.99), axis=(1, 2))
    else:
        saturated = zero
    return Probe(
        act_mean=jnp.mean(h, axis=(1, 2)),
        act_var=jnp.var(h, axis=(1, 2)),
        pre_q=jnp.mean(pre * pre, axis=(1, 2)),
        backprop_norm=jnp.sqrt(jnp.sum(back * back, axis=(1, 2))),
        weight_grad_norm=kernel_norms(grads, net.layout),
        weight_norm=kernel_norms(params, net.layout),
        dead_fraction=dead,
        saturated_fraction=saturated,
        unit_spread=jnp.mean(jnp.std(h, axis=2), axis=1)
        / (jnp.sqrt(jnp.mean(h * h, axis=(1, 2))) + 1e-30),
    )
