"""One variance per initializer: the framework initializers the exports build have exactly the
variance of the core's (``pipeline.core.initializers.VARIANCE_SCALING``, the one table of
factors), for every variance-scaling initializer, fan mode, gain and a dense and a convolution
shape. Exact, from each framework's documented formula; tests/unit/test_export.py measures the
draws themselves."""

import functools
import math

import pytest

from pipeline.core.initializers import VARIANCE_SCALING, compute_fans, expected_std
from pipeline.reuse import export

SHAPES = [(300, 100), (3, 3, 16, 32)]  # ours: (in, out) and (*window, in, out)
CASES = [
    (name, shape, mode, gain)
    for name in VARIANCE_SCALING
    for shape in SHAPES
    for mode in ("fan_in", "fan_out")
    for gain in (1.0, 1.7)
]


@functools.cache  # one config load per initializer, mode and gain
def _spec(name: str, mode: str, gain: float):
    return export.init_spec(
        {"init": {"weights": name, "gain": gain, "mode": mode}, "model": {"activation": "tanh"}}
    )


def _ours(name: str, shape: tuple, mode: str, gain: float) -> float:
    return expected_std(name, shape, gain, {"mode": mode})


def _fan(shape: tuple, mode: str) -> float:
    fans = compute_fans(shape)  # receptive field x channels, as JAX, Keras and torch count
    return {"fan_in": fans.fan_in, "fan_out": fans.fan_out}.get(
        mode, (fans.fan_in + fans.fan_out) / 2
    )


def test_the_export_reads_the_cores_factors():
    assert export.VARIANCE_SCALING is VARIANCE_SCALING


@pytest.mark.parametrize(("name", "shape", "mode", "gain"), CASES)
@pytest.mark.parametrize("framework", ["flax", "keras"])
def test_variance_scaling_calls_have_the_cores_variance(framework, name, shape, mode, gain):
    """jax.nn.initializers.variance_scaling and keras.initializers.VarianceScaling draw with
    variance scale / n, n the fan the mode names, whatever the distribution (a truncated normal
    rescaled by 0.8796, a uniform of limit sqrt(3 scale / n))."""
    s = _spec(name, mode, gain)
    call = export.flax_kernel(s) if framework == "flax" else export.keras_kernel(s)
    assert call.path.endswith(("variance_scaling", "VarianceScaling"))
    std = math.sqrt(call.kwargs["scale"] / _fan(shape, call.kwargs["mode"]))
    assert std == pytest.approx(_ours(name, shape, mode, gain), rel=1e-12)


@pytest.mark.parametrize(("name", "shape", "mode", "gain"), CASES)
def test_torch_init_calls_have_the_cores_variance(name, shape, mode, gain):
    """torch.nn.init: xavier std = gain sqrt(2 / (fan_in + fan_out)); kaiming std =
    calculate_gain(nonlinearity, a) / sqrt(fan); trunc_normal_(std=1, a=-2, b=2) realised std
    0.8796; then the export's multipliers."""
    torch = pytest.importorskip("torch")
    s = _spec(name, mode, gain)
    call, multiplier = export.torch_kernel(s)
    kw = call.kwargs
    fans = compute_fans(shape)
    if "xavier" in call.path:
        std = kw["gain"] * math.sqrt(2.0 / (fans.fan_in + fans.fan_out))
    elif "kaiming" in call.path:
        gain_t = torch.nn.init.calculate_gain(kw["nonlinearity"], kw["a"])
        std = gain_t / math.sqrt(_fan(shape, kw["mode"]))
    else:
        assert call.path.endswith("trunc_normal_") and (kw["std"], kw["a"], kw["b"]) == (1, -2, 2)
        std = 0.87962566103423978  # N(0, 1) cut at +-2
    per_fan_in = export.torch_per_fan_in(s)
    if per_fan_in is not None:  # to_torch's own 1/sqrt(fan_in) of the module
        multiplier *= per_fan_in / math.sqrt(fans.fan_in)
    assert std * multiplier == pytest.approx(_ours(name, shape, mode, gain), rel=1e-12)
