"""A best configuration's initializers as ``jax.nn.initializers`` (what Flax re-exports)."""

from __future__ import annotations

from collections.abc import Callable

from pipeline.core.initializers import INITIALIZERS, VARIANCE_SCALING
from pipeline.reuse.calls import Call, check_exportable, scale_and_mode, torch_bias_limit
from pipeline.reuse.resolve import InitSpec, hidden_fan_in, init_spec


def flax_kernel(s: InitSpec) -> Call:
    check_exportable(s, "Flax")
    inits = (
        "jax.nn.initializers"  # what flax.nnx.initializers and flax.linen.initializers re-export
    )
    if s.weights in VARIANCE_SCALING:
        scale, mode = scale_and_mode(s)
        dist = INITIALIZERS[s.weights].draw  # "normal" is untruncated in JAX
        return Call(
            f"{inits}.variance_scaling", {"scale": scale, "mode": mode, "distribution": dist}
        )
    g = s.gain
    if s.weights == "orthogonal":
        return Call(f"{inits}.orthogonal", {"scale": g})
    if s.weights == "normal":
        return Call(f"{inits}.normal", {"stddev": s.std * g})
    if s.weights == "truncated_normal":  # JAX's stddev is the untruncated one, like ours
        return Call(f"{inits}.truncated_normal", {"stddev": s.std * g, "lower": -2.0, "upper": 2.0})
    if s.weights == "uniform":  # jax.nn.initializers.uniform is U(0, scale): not symmetric
        limit = s.limit * g
        return Call("jax.random.uniform", {"minval": -limit, "maxval": limit}, partial=True)
    if s.weights == "constant":
        return Call(f"{inits}.constant", {"value": s.value * g})
    return Call(f"{inits}.zeros", None)


def flax_bias(s: InitSpec, fan_in: float | None = None) -> Call:
    inits = "jax.nn.initializers"
    limit = torch_bias_limit(s, fan_in)
    if limit is not None:
        return Call("jax.random.uniform", {"minval": -limit, "maxval": limit}, partial=True)
    if s.bias == "constant":
        return Call(f"{inits}.constant", {"value": s.bias_value})
    if s.bias == "normal":
        return Call(f"{inits}.normal", {"stddev": s.bias_std})
    return Call(f"{inits}.zeros", None)


def to_flax(
    cfg, layer: str | None = None, fan_in: float | None = None
) -> tuple[Callable, Callable]:
    """``(kernel_init, bias_init)`` from ``jax.nn.initializers`` (what Flax re-exports); with
    ``layer``, the ones ``init.rules`` give that module path (a whole tree at once:
    ``pipeline.init_params``); ``fan_in``: the layer's, for PyTorch's default bias.

    >>> kernel_init, bias_init = to_flax(read_best("conf/best/default.yaml"))
    >>> layer = nnx.Linear(64, 64, kernel_init=kernel_init, bias_init=bias_init,
    ...                    rngs=nnx.Rngs(0))
    """
    s = init_spec(cfg, layer)
    return flax_kernel(s).build(), flax_bias(s, fan_in or hidden_fan_in(cfg)).build()
