"""A best configuration's initializers as ``torch.nn.init`` calls (PyTorch imported only
when a module is initialized).

``torch_default`` is torch's ``kaiming_uniform_(a=sqrt(5))`` (U(+-g/sqrt(fan_in))),
``flax_default`` a truncated normal rescaled by each module's fan_in, ``keras_default``
``xavier_uniform_``; PyTorch's default bias U(+-1/sqrt(fan_in)) is drawn per module.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pipeline.core.initializers import (
    INITIALIZERS,
    TRUNCATED_NORMAL_STD,
    VARIANCE_SCALING,
    resolve_bias,
)
from pipeline.reuse.calls import Call, check_exportable
from pipeline.reuse.resolve import InitSpec, init_spec, sections, torch_path

# Our activation -> the name torch.nn.init.calculate_gain knows it by (same recommended gain).
TORCH_NONLINEARITY = {
    "identity": "linear",
    "relu": "relu",
    "leaky_relu": "leaky_relu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "selu": "selu",
}


def _torch_kaiming(s: InitSpec) -> tuple[dict[str, Any], float]:
    """kaiming_* keyword arguments and the multiplier left over.

    torch's std (or limit / sqrt(3)) is calculate_gain(nonlinearity, a) / sqrt(fan); ours is
    sqrt(factor) * gain / sqrt(fan). When that equals the activation's recommended gain
    (init.gain=auto, or a number that happens to match) the call names the activation itself;
    otherwise it uses the base nonlinearity of the formula (relu for He, linear for LeCun) and
    multiplies the weights by ``gain`` afterwards.
    """
    from pipeline.core.activations import recommended_gain

    factor, _ = VARIANCE_SCALING[s.weights]
    total = math.sqrt(factor) * s.gain
    name = TORCH_NONLINEARITY.get(s.activation)
    if name and math.isclose(recommended_gain(s.activation, s.negative_slope), total, rel_tol=1e-9):
        a = s.negative_slope if name == "leaky_relu" else 0.0
        return {"a": a, "mode": s.mode, "nonlinearity": name}, 1.0
    base = "relu" if factor == 2.0 else "linear"
    return {"a": 0.0, "mode": s.mode, "nonlinearity": base}, s.gain


def torch_kernel(s: InitSpec) -> tuple[Call, float]:
    """The ``torch.nn.init`` call for a weight, and a multiplier applied after it."""
    check_exportable(s, "PyTorch")
    init = "torch.nn.init"
    g = s.gain
    draw = INITIALIZERS[s.weights].draw
    if s.weights == "torch_default":  # nn.Linear.reset_parameters, then the gain
        kwargs = {"a": math.sqrt(5.0), "mode": "fan_in", "nonlinearity": "leaky_relu"}
        return Call(f"{init}.kaiming_uniform_", kwargs), g
    if s.weights == "flax_default":  # times g / (0.8796 sqrt(fan_in)): torch_per_fan_in
        return Call(f"{init}.trunc_normal_", {"mean": 0.0, "std": 1.0, "a": -2.0, "b": 2.0}), 1.0
    if s.weights in VARIANCE_SCALING and VARIANCE_SCALING[s.weights][1] == "fan_avg":
        return Call(f"{init}.xavier_{draw}_", {"gain": g}), 1.0
    if s.weights in VARIANCE_SCALING:
        kwargs, multiplier = _torch_kaiming(s)
        return Call(f"{init}.kaiming_{draw}_", kwargs), multiplier
    if s.weights == "orthogonal":
        return Call(f"{init}.orthogonal_", {"gain": g}), 1.0
    if s.weights == "normal":
        return Call(f"{init}.normal_", {"mean": 0.0, "std": s.std * g}), 1.0
    if s.weights == "truncated_normal":  # torch's a, b are absolute, not in stds
        std = s.std * g
        return Call(
            f"{init}.trunc_normal_", {"mean": 0.0, "std": std, "a": -2 * std, "b": 2 * std}
        ), 1.0
    if s.weights == "uniform":
        return Call(f"{init}.uniform_", {"a": -s.limit * g, "b": s.limit * g}), 1.0
    if s.weights == "constant":
        return Call(f"{init}.constant_", {"val": s.value * g}), 1.0
    return Call(f"{init}.zeros_", {}), 1.0


def torch_per_fan_in(s: InitSpec) -> float | None:
    """c when the weight is then multiplied by c / sqrt(fan_in) (torch.nn.init has no
    fan-scaled truncated normal: flax_default), else None."""
    return s.gain / TRUNCATED_NORMAL_STD if s.weights == "flax_default" else None


# PyTorch's default bias U(+-limit), limit = 1/sqrt(fan_in) of each module (nn.Linear).
TORCH_BIAS = Call("torch.nn.init.uniform_", None)


def torch_bias(s: InitSpec) -> Call:
    if resolve_bias(s.bias, s.weights) == "torch_default":
        return TORCH_BIAS
    if s.bias == "constant":
        return Call("torch.nn.init.constant_", {"val": s.bias_value})
    if s.bias == "normal":
        return Call("torch.nn.init.normal_", {"mean": 0.0, "std": s.bias_std})
    return Call("torch.nn.init.zeros_", {})


def torch_layers() -> tuple[type, ...]:
    """The modules ``to_torch`` initializes: their weight is (out, in, *window), like torch's fans
    expect (transposed convolutions are (in, out, ...) and are left alone)."""
    import torch.nn as nn

    return (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def to_torch(cfg) -> Callable:
    """``init(module)``: initializes every Linear and Conv1d/2d/3d of ``module`` in place; with
    ``init.rules``, each by the rules that match its name as a path (``torch_path``: module
    ``blocks.0.out_proj`` is ``blocks/0/out_proj``, its ``weight`` our ``kernel``).

    >>> model = to_torch(read_best("conf/best/default.yaml"))(model)  # returns the module
    """
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"to_torch needs PyTorch: pip install -e '.[torch]' ({e})") from e
    ruled = bool(sections(cfg)[0].get("rules"))
    default = init_spec(cfg)
    torch_kernel(default)  # an initializer without equivalent fails here, not per layer
    layers = torch_layers()

    def calls(name: str):
        s = init_spec(cfg, torch_path(name)) if ruled else default
        kernel, multiplier = torch_kernel(s)
        return kernel, multiplier, torch_per_fan_in(s), torch_bias(s)

    def init(module):
        with torch.no_grad():
            for name, m in module.named_modules():
                if not isinstance(m, layers):
                    continue
                kernel, multiplier, per_fan_in, bias = calls(name)
                kernel.function()(m.weight, **kernel.kwargs)
                limit = 1.0 / math.sqrt(m.weight[0].numel())  # 1/sqrt(fan_in)
                if per_fan_in is not None:
                    multiplier *= per_fan_in * limit
                if multiplier != 1.0:
                    m.weight.mul_(multiplier)
                if m.bias is not None and bias is TORCH_BIAS:
                    torch.nn.init.uniform_(m.bias, -limit, limit)
                elif m.bias is not None:
                    bias.function()(m.bias, **bias.kwargs)
        return module

    return init
