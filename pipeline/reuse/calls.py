"""What the three frameworks' exports share: ``Call``, one framework call that both builds
the object (``to_flax``, ``to_keras``, ``to_torch``) and prints it as code (``snippet``), so the
snippet ``best --format`` prints is exactly what the Python API returns; and which of our
initializers each framework can reproduce.

Every initializer here is a "variance scaling" one (std or limit = sqrt(factor * gain^2 / fan),
Glorot & Bengio 2010; He et al. 2015; LeCun et al. 1998: the factors are the core's,
``pipeline.core.initializers.VARIANCE_SCALING``), an orthogonal one (Saxe et al. 2013) or an
absolute one (fixed std, limit or value), and all three frameworks implement each of these with
the same fan convention as ours: fan_in = in_features * receptive field, fan_out = out_features *
receptive field. ``tests/unit/test_export.py`` checks mean, variance, fan mode and distribution
shape for every initializer of the registry; ``tests/unit/test_variance_factors.py`` checks each
framework call's variance against the core's exactly.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Callable
from typing import Any, NamedTuple

from pipeline.core.initializers import INITIALIZERS, VARIANCE_SCALING, resolve_bias
from pipeline.reuse.resolve import InitSpec

FORMATS = ("flax", "keras", "torch")


ABSOLUTE = ("zeros", "constant", "normal", "truncated_normal", "uniform")


EXPORTABLE = (*VARIANCE_SCALING, "orthogonal", *ABSOLUTE)


class Call(NamedTuple):
    """``path(**kwargs)``, ``path`` a dotted name from a framework's top module.

    ``kwargs=None`` stands for the object itself (``jax.nn.initializers.zeros`` is already an
    initializer); ``partial`` for ``functools.partial(path, **kwargs)``.
    """

    path: str
    kwargs: dict[str, Any] | None
    partial: bool = False

    def function(self) -> Callable:
        root, *attrs = self.path.split(".")
        obj = importlib.import_module(root)
        for attr in attrs:
            obj = getattr(obj, attr)
        return obj

    def build(self):
        fn = self.function()
        if self.kwargs is None:
            return fn
        if self.partial:
            import functools

            return functools.partial(fn, **self.kwargs)
        return fn(**self.kwargs)

    def source(self, *args: str) -> str:
        if self.kwargs is None:
            return self.path
        parts = [*args, *(f"{k}={literal(v)}" for k, v in self.kwargs.items())]
        if self.partial:
            return f"functools.partial({', '.join([self.path, *parts])})"
        return f"{self.path}({', '.join(parts)})"


def literal(value) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    return repr(float(f"{value:.8g}"))  # 2.0000000000000004 -> 2.0; 8 digits is float32 and more


def check_exportable(s: InitSpec, framework: str) -> None:
    if s.weights not in INITIALIZERS:
        raise ValueError(f"unknown initializer {s.weights!r}")
    if s.weights not in EXPORTABLE:
        raise ValueError(
            f"initializer {s.weights!r} has no exact equivalent in {framework}; "
            f"exportable: {', '.join(EXPORTABLE)}"
        )


def scale_and_mode(s: InitSpec) -> tuple[float, str]:
    factor, fan = VARIANCE_SCALING[s.weights]
    return factor * s.gain**2, fan or s.mode


def torch_bias_limit(s: InitSpec, fan_in: float | None) -> float | None:
    """PyTorch's default bias limit 1/sqrt(fan_in) when the bias is torch's, else None."""
    if resolve_bias(s.bias, s.weights) != "torch_default":
        return None
    if not fan_in:
        raise ValueError(
            "PyTorch's default bias U(+-1/sqrt(fan_in)) needs the layer's fan_in: pass fan_in=..."
        )
    return 1.0 / math.sqrt(fan_in)
