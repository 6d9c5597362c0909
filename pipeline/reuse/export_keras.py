"""A best configuration's initializers as ``keras.initializers`` objects (Keras 3, imported
only when an object is built)."""

from __future__ import annotations

import importlib
import os

from pipeline.core.initializers import INITIALIZERS, VARIANCE_SCALING
from pipeline.reuse.calls import Call, check_exportable, scale_and_mode, torch_bias_limit
from pipeline.reuse.resolve import InitSpec, hidden_fan_in, init_spec


def keras_kernel(s: InitSpec) -> Call:
    check_exportable(s, "Keras")
    inits = "keras.initializers"
    g = s.gain
    if s.weights in VARIANCE_SCALING:
        scale, mode = scale_and_mode(s)
        # Keras' "normal" means truncated (and rescaled); ours is the plain normal.
        draw = INITIALIZERS[s.weights].draw  # truncated: flax_default, rescaled like Keras'
        dist = {"normal": "untruncated_normal", "uniform": "uniform"}.get(draw, draw)
        return Call(
            f"{inits}.VarianceScaling", {"scale": scale, "mode": mode, "distribution": dist}
        )
    if s.weights == "orthogonal":
        return Call(f"{inits}.Orthogonal", {"gain": g})
    if s.weights == "normal":
        return Call(f"{inits}.RandomNormal", {"mean": 0.0, "stddev": s.std * g})
    if s.weights == "truncated_normal":  # cut at 2 stddev, not rescaled: like ours
        return Call(f"{inits}.TruncatedNormal", {"mean": 0.0, "stddev": s.std * g})
    if s.weights == "uniform":
        return Call(f"{inits}.RandomUniform", {"minval": -s.limit * g, "maxval": s.limit * g})
    if s.weights == "constant":
        return Call(f"{inits}.Constant", {"value": s.value * g})
    return Call(f"{inits}.Zeros", {})


def keras_bias(s: InitSpec, fan_in: float | None = None) -> Call:
    limit = torch_bias_limit(s, fan_in)
    if limit is not None:
        return Call("keras.initializers.RandomUniform", {"minval": -limit, "maxval": limit})
    if s.bias == "constant":
        return Call("keras.initializers.Constant", {"value": s.bias_value})
    if s.bias == "normal":
        return Call("keras.initializers.RandomNormal", {"mean": 0.0, "stddev": s.bias_std})
    return Call("keras.initializers.Zeros", {})


def _import_keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")  # Keras 3 defaults to TensorFlow otherwise
    try:
        return importlib.import_module("keras")
    except ImportError as e:
        raise ImportError(f"to_keras needs Keras 3: pip install -e '.[keras]' ({e})") from e


def to_keras(cfg, bias: bool = False, layer: str | None = None, fan_in: float | None = None):
    """A ``keras.initializers`` object for ``kernel_initializer`` (``bias=True``: the bias's);
    with ``layer``, the one ``init.rules`` give that layer's path; ``fan_in``: the layer's, for
    PyTorch's default bias.

    >>> layer = keras.layers.Dense(64, kernel_initializer=to_keras(best),
    ...                            bias_initializer=to_keras(best, bias=True))
    """
    s = init_spec(cfg, layer)
    call = keras_bias(s, fan_in or hidden_fan_in(cfg)) if bias else keras_kernel(s)
    _import_keras()
    return call.build()
