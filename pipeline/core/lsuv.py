"""Layer-sequential unit-variance initialization (Mishkin & Matas 2015, "All you need is a good
init"), run inside the compiled call on each trial's first mini-batch.

Start from orthonormal weights, then, layer by layer from the input, divide the kernel by the
standard deviation of the layer's output on the batch until that variance is within ``TOL`` of
the target (the paper's Algorithm 1; we take its target 1, times ``gain^2``). With zero biases a
single division is exact; biases make it converge over a few of the ``MAX_ITERS`` passes.
Every layer is normalized in order, each seeing the already-normalized layers below it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pipeline.core.activations import activate

TOL = 0.01  # |Var - target| the paper stops at (it uses 0.1; 0.01 costs nothing more here)
MAX_ITERS = 5


def _normalize(kernel: jax.Array, bias: jax.Array, h: jax.Array, target: jax.Array):
    """The kernel rescaled so that ``h @ kernel + bias`` has variance ``target``."""

    def step(_, k):
        var = jnp.var(h @ k + bias)
        done = jnp.abs(var - target) <= TOL * target
        return jnp.where(done | (var == 0), k, k * jnp.sqrt(target / var))

    return jax.lax.fori_loop(0, MAX_ITERS, step, kernel)


def lsuv(
    params: dict,
    x: jax.Array,
    depth: jax.Array,
    slope: jax.Array,
    activation: str,
    gain,
    which: jax.Array | None = None,
) -> dict:
    """``params`` (the layout of ``MLP``) with every real layer's kernel LSUV-normalized."""

    def act(x, slope):  # ``which``: the row's activation of a merged structure
        return activate(activation, x, slope, which)

    target = jnp.square(gain)
    out = jax.tree.map(lambda a: a, params)

    layer = params["input"]
    kernel = _normalize(layer["kernel"], layer["bias"], x, target)
    out["input"] = {**layer, "kernel": kernel}
    h = act(x @ kernel + layer["bias"], slope)

    if "hidden" in params:
        hidden = params["hidden"]["dense"]

        def body(h, layer):
            k, b, index = layer
            real = index + 2 <= depth  # masked layers beyond the trial's depth stay as they are
            k_new = _normalize(k, b, h, target)
            h_new = act(h @ k_new + b, slope)
            return jnp.where(real, h_new, h), jnp.where(real, k_new, k)

        indices = jnp.arange(hidden["kernel"].shape[0])
        h, kernels = jax.lax.scan(body, h, (hidden["kernel"], hidden["bias"], indices))
        out["hidden"] = {"dense": {**hidden, "kernel": kernels}}

    layer = params["output"]
    out["output"] = {**layer, "kernel": _normalize(layer["kernel"], layer["bias"], h, target)}
    return out
