"""Best configurations translated to Flax, Keras and PyTorch (the files: ``pipeline.reuse.best``).

Translation: each framework gets one small mapping from our initializer to a call of its own API
(``_flax_kernel``, ``_keras_kernel``, ``_torch_kernel``). The same :class:`Call` both builds the
object (``to_flax``, ``to_keras``, ``to_torch``) and prints it as code (``snippet``), so the
snippet ``best --format`` prints is exactly what the Python API returns. Keras and PyTorch are
imported only when an object is built; printing a snippet needs neither.

Every initializer here is a "variance scaling" one (std or limit = sqrt(factor * gain^2 / fan),
Glorot & Bengio 2010; He et al. 2015; LeCun et al. 1998), an orthogonal one (Saxe et al. 2013) or
an absolute one (fixed std, limit or value), and all three frameworks implement each of these with
the same fan convention as ours: fan_in = in_features * receptive field, fan_out = out_features *
receptive field. ``tests/test_export.py`` checks mean, variance, fan mode and distribution shape
for every initializer of the registry.

The framework defaults map to each framework's own call: ``torch_default`` is torch's
``kaiming_uniform_(a=sqrt(5))`` (U(+-g/sqrt(fan_in))), ``flax_default`` Flax's ``lecun_normal``
(``variance_scaling(1, "fan_in", "truncated_normal")``, rescaled so the realised std is
g/sqrt(fan_in)), ``keras_default`` ``GlorotUniform``. PyTorch's default bias U(+-1/sqrt(fan_in))
is drawn exactly in every framework; in Flax and Keras, whose bias initializers see only the
bias's shape, for the ``fan_in`` passed (default: a hidden layer's, ``hidden_fan_in``).
"""

from __future__ import annotations

import importlib
import json
import math
import os
from collections.abc import Callable
from typing import Any, NamedTuple

from pipeline.core.initializers import (
    INITIALIZERS,
    TRUNCATED_NORMAL_STD,
    resolve_bias,
    resolve_gain,
)
from pipeline.core.model import EMBEDDINGS, GATED, rules_in_force
from pipeline.reuse.best import read_best  # noqa: F401 (documented here: to_flax(read_best(...)))

FORMATS = ("flax", "keras", "torch")

# name -> (factor, fan) of the variance-scaling form std^2 = factor * gain^2 / fan (normal) or
# limit^2 = 3 * factor * gain^2 / fan (uniform). fan None: init.mode (fan_in or fan_out).
VARIANCE_SCALING: dict[str, tuple[float, str | None]] = {
    "glorot_normal": (1.0, "fan_avg"),  # Glorot & Bengio 2010: 2 / (fan_in + fan_out)
    "xavier_normal": (1.0, "fan_avg"),
    "glorot_uniform": (1.0, "fan_avg"),
    "xavier_uniform": (1.0, "fan_avg"),
    "he_normal": (2.0, None),  # He et al. 2015: 2 / fan
    "kaiming_normal": (2.0, None),
    "he_uniform": (2.0, None),
    "kaiming_uniform": (2.0, None),
    "lecun_normal": (1.0, None),  # LeCun et al. 1998: 1 / fan
    "lecun_uniform": (1.0, None),
    # Framework defaults, always fan_in (fan_avg for Glorot):
    "torch_default": (1.0 / 3.0, "fan_in"),  # kaiming_uniform_(a=sqrt(5)): gain^2 1/3
    "flax_default": (1.0, "fan_in"),  # lecun_normal, truncated and rescaled
    "keras_default": (1.0, "fan_avg"),  # glorot_uniform
}
ABSOLUTE = ("zeros", "constant", "normal", "truncated_normal", "uniform")
EXPORTABLE = (*VARIANCE_SCALING, "orthogonal", *ABSOLUTE)

# Our activation -> the name torch.nn.init.calculate_gain knows it by (same recommended gain).
TORCH_NONLINEARITY = {
    "identity": "linear",
    "relu": "relu",
    "leaky_relu": "leaky_relu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "selu": "selu",
}


class InitSpec(NamedTuple):
    """Everything a framework needs to reproduce one config's weight and bias initializers."""

    weights: str
    gain: float  # the number (init.gain=auto already resolved)
    mode: str
    std: float
    limit: float
    value: float
    bias: str
    bias_value: float
    bias_std: float
    activation: str
    negative_slope: float


def _sections(cfg) -> tuple[dict, dict, dict]:
    """(init, model, structure) of a best entry or run config, missing keys at their defaults;
    ``init["rules"]`` is every rule in force, those ``init.residual`` and ``init.readout``
    generate included (``pipeline.core.model.rules_in_force``)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    init, model = dict(cfg.get("init") or {}), dict(cfg.get("model") or {})
    if "weights" not in init:
        raise ValueError("config has no init.weights: pass a best-config entry or a run config")
    needed = {*InitSpec._fields} - {"weights", "gain", "activation", "negative_slope"}
    if not needed <= init.keys() or not {"activation", "negative_slope"} <= model.keys():
        from pipeline.config import load_config

        defaults = OmegaConf.to_container(load_config(), resolve=True)
        init, model = {**defaults["init"], **init}, {**defaults["model"], **model}
    structure = {"depth": model.get("depth"), "width": model.get("width")}
    residual, readout = init.get("residual", "none"), init.get("readout", "default")
    init["rules"] = rules_in_force(
        init.get("rules"),
        residual,
        readout,
        model.get("depth"),
        model.get("kind", "mlp"),
        init.get("embedding_std"),
    ) + parametrization_rules(init, model)
    return init, model, {**structure, **(cfg.get("structure") or {})}


def _width_ratio(model: dict) -> float:
    """model.width / model.base_width (null: the width itself): muP's r for the built-ins."""
    width = model.get("width") or 1
    return width / (model.get("base_width") or width)


def parametrization_rules(init: dict, model: dict) -> list[dict]:
    """The initial-std multipliers of ``init.parametrization`` as rules, for the built-in
    networks whose read-out path is known: under mup and depth_mup the read-out kernel's std
    x r^-1/2, r = width / base width (``pipeline.core.parametrization.multipliers``: its variance
    1/fan_in^2, Tensor Programs V Table 3); every other multiplier of the initialization is 1.
    A user's module (model.kind=custom) gets no rule: ``parametrization_note`` says so."""
    if init.get("parametrization", "sp") not in ("mup", "depth_mup"):
        return []
    if model.get("kind", "mlp") == "custom":
        return []
    from pipeline.core.model import READOUT
    from pipeline.core.parametrization import LeafScaling, multipliers

    readout = LeafScaling("readout", _width_ratio(model), 1.0)  # fan_in scales, fan_out fixed
    return [
        {"match": READOUT[0], "scale": multipliers(init["parametrization"], readout, False).init}
    ]


def parametrization_note(cfg) -> str:
    """What ``init.parametrization`` sets beyond the initialization, as comments: the learning
    rate's multiplier per layer role (``pipeline.core.parametrization``, SGD or Adam by
    train.optimizer) for the built-in networks, depth_mup's branch multiplier. Optimizer code
    that applies them (an optax transformation, torch parameter groups) is not generated yet."""
    init, model, _ = _sections(cfg)
    name = init.get("parametrization", "sp")
    if name == "sp":
        return ""
    from pipeline.core.parametrization import LeafScaling, branch_multiplier, multipliers

    train = (cfg.get("train") if isinstance(cfg, dict) else None) or {}
    adam = train.get("optimizer") == "adam"
    if model.get("kind", "mlp") == "custom":
        return (
            f"# init.parametrization={name}: the per-layer multipliers of your module are not "
            "exported (docs/mup.md); train it with the engine, or apply them by hand\n"
        )
    r = _width_ratio(model)
    depth = model.get("depth") or 1
    d = depth / (model.get("base_depth") or depth)
    roles = {
        "input layer": LeafScaling("input", 1.0, r),
        "hidden layers": LeafScaling("hidden", r, r, branch=True),
        "read-out": LeafScaling("readout", r, 1.0),
        "biases and norms of width size": LeafScaling("vector", 1.0, r),
    }
    rates = ", ".join(
        f"{role} x{multipliers(name, leaf, adam, d).lr:.4g}" for role, leaf in roles.items()
    )
    lines = [
        f"# init.parametrization={name}, width {model.get('width')} over base "
        f"{model.get('base_width') or model.get('width')} (docs/mup.md): the read-out's std "
        "multiplier is in the initializers below;",
        f"#   learning rate per layer ({'Adam' if adam else 'SGD'}): train.learning_rate times "
        f"{rates}",
    ]
    if name == "depth_mup":
        lines.append(
            f"#   each residual branch's output x {branch_multiplier(name, d):.4g} (forward)"
        )
    if model.get("kind") == "transformer":
        from pipeline.core.transformer import attention_scale

        flat = {f"model.{k}": v for k, v in model.items()} | {"init.parametrization": name}
        lines.append(f"#   attention logits x {attention_scale(flat):.4g} (muP's 1/d)")
    return "\n".join(lines) + "\n"


def init_spec(cfg, layer: str | None = None) -> InitSpec:
    """The initializers of a best-config entry (``read_best``) or a full run config; with
    ``layer`` (a module path such as ``"blocks/0/out_proj"``), the ones its ``init.rules`` give
    that layer's ``kernel`` and ``bias`` (a rule's ``scale`` is folded into the gain and the bias
    moments; a scale of 0 is the zeros initializer).

    A plain dict may leave keys out (``{"init": {"weights": "he_normal"}}``); they take their
    ``conf/config.yaml`` defaults.
    """
    init, model, structure = _sections(cfg)
    kernel_scale = bias_scale = 1.0
    rules = init.get("rules") or []
    if layer is not None and rules:
        from pipeline.core.rules import BIAS_KEYS, WEIGHT_KEYS, evaluate, resolve

        kernel = resolve({k: init[k] for k in WEIGHT_KEYS}, rules, f"{layer}/kernel")
        bias = resolve({k: init[k] for k in BIAS_KEYS}, rules, f"{layer}/bias")
        try:
            kernel_scale = evaluate(kernel.pop("scale"), structure)
            bias_scale = evaluate(bias.pop("scale"), structure)
        except (KeyError, TypeError):
            raise ValueError(
                f"a rule's scale formula needs the structure ({', '.join(structure)} known): "
                "export from a best file written by `make best`"
            ) from None
        changed = any(kernel[k] != init[k] for k in ("weights", "gain"))
        init = {**init, **kernel, **bias}
        if changed:
            init.pop("gain_value", None)
    gain = init.get("gain_value")
    if gain is None:
        gain = resolve_gain(
            init["weights"], init["gain"], model["activation"], model["negative_slope"]
        )
    weights, bias = init["weights"], init["bias"]
    if kernel_scale == 0.0:
        weights = "zeros"
    if bias_scale == 0.0:
        bias = "zeros"
    return InitSpec(
        weights=weights,
        gain=float(gain) * kernel_scale,
        mode=init["mode"],
        std=float(init["std"]),
        limit=float(init["limit"]),
        value=float(init["value"]),
        bias=bias,
        bias_value=float(init["bias_value"]) * bias_scale,
        bias_std=float(init["bias_std"]) * abs(bias_scale),
        activation=model["activation"],
        negative_slope=float(model["negative_slope"]),
    )


def rule_layers(cfg) -> list[str]:
    """One layer path per rule (its glob without the trailing ``/kernel`` or ``/bias``): the
    layers the snippets give their own initializers, in rule order."""
    init, _, _ = _sections(cfg)
    layers = []
    for rule in init.get("rules") or []:
        if rule["match"] in EMBEDDINGS:  # a transformer's tables: its note says how to draw them
            continue
        layer = rule["match"].removesuffix("/kernel").removesuffix("/bias")
        if layer not in layers:
            layers.append(layer)
    return layers


def torch_path(name: str) -> str:
    """A PyTorch module name as the Flax-style path rules match (``blocks.0.fc`` ->
    ``blocks/0/fc``): a module's ``weight`` is our ``kernel``."""
    return name.replace(".", "/")


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
        parts = [*args, *(f"{k}={_literal(v)}" for k, v in self.kwargs.items())]
        if self.partial:
            return f"functools.partial({', '.join([self.path, *parts])})"
        return f"{self.path}({', '.join(parts)})"


def _literal(value) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    return repr(float(f"{value:.8g}"))  # 2.0000000000000004 -> 2.0; 8 digits is float32 and more


def _check_exportable(s: InitSpec, framework: str) -> None:
    if s.weights not in INITIALIZERS:
        raise ValueError(f"unknown initializer {s.weights!r}")
    if s.weights not in EXPORTABLE:
        raise ValueError(
            f"initializer {s.weights!r} has no exact equivalent in {framework}; "
            f"exportable: {', '.join(EXPORTABLE)}"
        )


def _variance_scaling(s: InitSpec) -> tuple[float, str]:
    factor, fan = VARIANCE_SCALING[s.weights]
    return factor * s.gain**2, fan or s.mode


def hidden_fan_in(cfg) -> float | None:
    """A hidden layer's fan_in (width; 9 x width for the CNN's 3x3 convolutions): the fan
    PyTorch's default bias is scaled by in Flax and Keras when no layer's ``fan_in`` is given."""
    _, model, structure = _sections(cfg)
    width = structure.get("width")
    return float(width) * (9 if model.get("kind") == "cnn" else 1) if width else None


def _torch_bias_limit(s: InitSpec, fan_in: float | None) -> float | None:
    """PyTorch's default bias limit 1/sqrt(fan_in) when the bias is torch's, else None."""
    if resolve_bias(s.bias, s.weights) != "torch_default":
        return None
    if not fan_in:
        raise ValueError(
            "PyTorch's default bias U(+-1/sqrt(fan_in)) needs the layer's fan_in: pass fan_in=..."
        )
    return 1.0 / math.sqrt(fan_in)


def _flax_kernel(s: InitSpec) -> Call:
    _check_exportable(s, "Flax")
    inits = (
        "jax.nn.initializers"  # what flax.nnx.initializers and flax.linen.initializers re-export
    )
    if s.weights in VARIANCE_SCALING:
        scale, mode = _variance_scaling(s)
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


def _flax_bias(s: InitSpec, fan_in: float | None = None) -> Call:
    inits = "jax.nn.initializers"
    limit = _torch_bias_limit(s, fan_in)
    if limit is not None:
        return Call("jax.random.uniform", {"minval": -limit, "maxval": limit}, partial=True)
    if s.bias == "constant":
        return Call(f"{inits}.constant", {"value": s.bias_value})
    if s.bias == "normal":
        return Call(f"{inits}.normal", {"stddev": s.bias_std})
    return Call(f"{inits}.zeros", None)


def _keras_kernel(s: InitSpec) -> Call:
    _check_exportable(s, "Keras")
    inits = "keras.initializers"
    g = s.gain
    if s.weights in VARIANCE_SCALING:
        scale, mode = _variance_scaling(s)
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


def _keras_bias(s: InitSpec, fan_in: float | None = None) -> Call:
    limit = _torch_bias_limit(s, fan_in)
    if limit is not None:
        return Call("keras.initializers.RandomUniform", {"minval": -limit, "maxval": limit})
    if s.bias == "constant":
        return Call("keras.initializers.Constant", {"value": s.bias_value})
    if s.bias == "normal":
        return Call("keras.initializers.RandomNormal", {"mean": 0.0, "stddev": s.bias_std})
    return Call("keras.initializers.Zeros", {})


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


def _torch_kernel(s: InitSpec) -> tuple[Call, float]:
    """The ``torch.nn.init`` call for a weight, and a multiplier applied after it."""
    _check_exportable(s, "PyTorch")
    init = "torch.nn.init"
    g = s.gain
    draw = INITIALIZERS[s.weights].draw
    if s.weights == "torch_default":  # nn.Linear.reset_parameters, then the gain
        kwargs = {"a": math.sqrt(5.0), "mode": "fan_in", "nonlinearity": "leaky_relu"}
        return Call(f"{init}.kaiming_uniform_", kwargs), g
    if s.weights == "flax_default":  # times g / (0.8796 sqrt(fan_in)): _torch_per_fan_in
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


def _torch_per_fan_in(s: InitSpec) -> float | None:
    """c when the weight is then multiplied by c / sqrt(fan_in) (torch.nn.init has no
    fan-scaled truncated normal: flax_default), else None."""
    return s.gain / TRUNCATED_NORMAL_STD if s.weights == "flax_default" else None


# PyTorch's default bias U(+-limit), limit = 1/sqrt(fan_in) of each module (nn.Linear).
TORCH_BIAS = Call("torch.nn.init.uniform_", None)


def _torch_bias(s: InitSpec) -> Call:
    if resolve_bias(s.bias, s.weights) == "torch_default":
        return TORCH_BIAS
    if s.bias == "constant":
        return Call("torch.nn.init.constant_", {"val": s.bias_value})
    if s.bias == "normal":
        return Call("torch.nn.init.normal_", {"mean": 0.0, "std": s.bias_std})
    return Call("torch.nn.init.zeros_", {})


def to_flax(
    cfg, layer: str | None = None, fan_in: float | None = None
) -> tuple[Callable, Callable]:
    """``(kernel_init, bias_init)`` from ``jax.nn.initializers`` (what Flax re-exports); with
    ``layer``, the ones ``init.rules`` give that module path (a whole tree at once:
    ``pipeline.init_params``); ``fan_in``: the layer's, for PyTorch's default bias.

    >>> kernel_init, bias_init = to_flax(read_best("conf/best/default.yaml"))  # doctest: +SKIP
    >>> layer = nnx.Linear(64, 64, kernel_init=kernel_init, bias_init=bias_init,
    ...                    rngs=nnx.Rngs(0))  # doctest: +SKIP
    """
    s = init_spec(cfg, layer)
    return _flax_kernel(s).build(), _flax_bias(s, fan_in or hidden_fan_in(cfg)).build()


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

    >>> keras.layers.Dense(64, kernel_initializer=to_keras(best),
    ...                    bias_initializer=to_keras(best, bias=True))  # doctest: +SKIP
    """
    s = init_spec(cfg, layer)
    call = _keras_bias(s, fan_in or hidden_fan_in(cfg)) if bias else _keras_kernel(s)
    _import_keras()
    return call.build()


def torch_layers() -> tuple[type, ...]:
    """The modules ``to_torch`` initializes: their weight is (out, in, *window), like torch's fans
    expect (transposed convolutions are (in, out, ...) and are left alone)."""
    import torch.nn as nn

    return (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def to_torch(cfg) -> Callable:
    """``init(module)``: initializes every Linear and Conv1d/2d/3d of ``module`` in place; with
    ``init.rules``, each by the rules that match its name as a path (``torch_path``: module
    ``blocks.0.out_proj`` is ``blocks/0/out_proj``, its ``weight`` our ``kernel``).

    >>> to_torch(read_best("conf/best/default.yaml"))(model)  # doctest: +SKIP
    """
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"to_torch needs PyTorch: pip install -e '.[torch]' ({e})") from e
    ruled = bool(_sections(cfg)[0].get("rules"))
    default = init_spec(cfg)
    _torch_kernel(default)  # an initializer without equivalent fails here, not per layer
    layers = torch_layers()

    def calls(name: str):
        s = init_spec(cfg, torch_path(name)) if ruled else default
        kernel, multiplier = _torch_kernel(s)
        return kernel, multiplier, _torch_per_fan_in(s), _torch_bias(s)

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


def snippet(cfg, framework: str, title: str = "") -> str:
    """Ready-to-paste code that builds the same initializers as ``to_<framework>(cfg)``.

    With ``init.rules``, each rule's layer gets its own initializers and a lookup picks them by
    path (the last matching glob wins). A rule's entry merges every rule whose glob matches its
    own glob, so nested globs (``*/kernel`` then ``head/kernel``) resolve as in the sweep;
    globs that only partly overlap are resolved exactly by ``to_torch``, ``to_keras(layer=...)``,
    ``to_flax(layer=...)`` and ``pipeline.init_params``, not by this text.
    """
    if framework not in FORMATS:
        raise ValueError(f"unknown format {framework!r}; allowed: {', '.join(FORMATS)}")
    s = init_spec(cfg)
    fan_in = hidden_fan_in(cfg) if framework != "torch" else None
    head = (f"# {title}\n" if title else "") + residual_note(cfg, framework)
    head += parametrization_note(cfg)
    layers = rule_layers(cfg)
    specs = [(layer, init_spec(cfg, layer)) for layer in layers]
    if framework == "flax":
        kernel = _flax_kernel(s)
        calls = [kernel, _flax_bias(s, fan_in)]
        calls += [c for _, r in specs for c in (_flax_kernel(r), _flax_bias(r, fan_in))]
        partial = any(c.partial for c in calls)
        imports = "import functools\n\nimport jax\n" if partial else "import jax\n"
        text = (
            f"{head}{'import fnmatch' + chr(10) + chr(10) if specs else ''}{imports}\n"
            f"kernel_init = {kernel.source()}\n"
            f"{_bias_note(s, fan_in, 'to_flax')}bias_init = {_flax_bias(s, fan_in).source()}\n"
        )
        if not specs:
            return text + (
                "# nnx.Linear(n_in, n_out, kernel_init=kernel_init, bias_init=bias_init, "
                "rngs=rngs)\n"
            )
        rows = "".join(
            f"    ({json.dumps(layer)}, {_flax_kernel(r).source()}, "
            f"{_flax_bias(r, fan_in).source()}),\n"
            for layer, r in specs
        )
        return text + (
            "# init.rules: (layer path glob, kernel_init, bias_init); the last match wins\n"
            f"RULES = [\n{rows}]\n\n\n"
            "def inits_for(layer: str):\n"
            '    """(kernel_init, bias_init) of the layer at this module path."""\n'
            "    for glob, kernel, bias in reversed(RULES):\n"
            "        if fnmatch.fnmatchcase(layer, glob):\n"
            "            return kernel, bias\n"
            "    return kernel_init, bias_init\n\n\n"
            '# k, b = inits_for("blocks/0/out_proj")\n'
            "# nnx.Linear(n_in, n_out, kernel_init=k, bias_init=b, rngs=rngs)\n"
        )
    if framework == "keras":
        text = (
            f"{head}{'import fnmatch' + chr(10) + chr(10) if specs else ''}import keras\n\n"
            f"kernel_initializer = {_keras_kernel(s).source()}\n"
            f"{_bias_note(s, fan_in, 'to_keras')}"
            f"bias_initializer = {_keras_bias(s, fan_in).source()}\n"
        )
        if not specs:
            return text + (
                "# keras.layers.Dense(units, kernel_initializer=kernel_initializer, "
                "bias_initializer=bias_initializer)\n"
            )
        rows = "".join(
            f"    ({json.dumps(layer)}, {_keras_kernel(r).source()}, "
            f"{_keras_bias(r, fan_in).source()}),\n"
            for layer, r in specs
        )
        return text + (
            "# init.rules: (layer path glob, kernel_initializer, bias_initializer); the last match"
            " wins\n"
            f"RULES = [\n{rows}]\n\n\n"
            "def initializers_for(layer: str):\n"
            '    """(kernel_initializer, bias_initializer) of the layer at this path."""\n'
            "    for glob, kernel, bias in reversed(RULES):\n"
            "        if fnmatch.fnmatchcase(layer, glob):\n"
            "            return kernel, bias\n"
            "    return kernel_initializer, bias_initializer\n\n\n"
            '# k, b = initializers_for("blocks/0/out_proj")\n'
            "# keras.layers.Dense(units, kernel_initializer=k, bias_initializer=b)\n"
        )
    code = _torch_snippet(s, specs)
    if "math." in code:  # the framework defaults scale by each module's fan_in
        code = code.replace("import fnmatch\n", "import fnmatch\nimport math\n", 1)
        code = code if specs else "import math\n\n" + code
    return head + code


# A residual MLP's block as model.norm builds it (pipeline.core.model), and the learnable scalar
# of SkipInit / ReZero in each framework's own code.
_BLOCKS = {
    "none": "x = skip * x + alpha * fc2(act(fc1(x)))",
    "pre": "x = skip * x + alpha * fc2(act(fc1(LayerNorm(x))))",
    "rmsnorm": "x = skip * x + alpha * fc2(act(fc1(RMSNorm(x))))",
    "post": "x = LayerNorm(skip * x + alpha * fc2(act(fc1(x))))",
}
_GATES = {
    "flax": 'alpha = self.param("gate", jax.nn.initializers.zeros, ())  # in each block',
    "keras": 'self.alpha = self.add_weight(shape=(), initializer="zeros")  # each block\'s build()',
    "torch": "self.alpha = torch.nn.Parameter(torch.zeros(()))  # each block's __init__",
}


def residual_note(cfg, framework: str) -> str:
    """What a residual network's ``init.residual`` sets in the forward pass, which no initializer
    can (the branch layers' own factors are rules, exported with the others): its block, and
    alpha and skip as numbers, or the code of SkipInit / ReZero's learnable gate."""
    init, model, _ = _sections(cfg)
    if model.get("kind") not in ("resmlp", "transformer"):
        return ""
    from pipeline.core.theory import embedding_var, residual_scales

    residual, depth = init.get("residual", "none"), int(model["depth"])
    s = residual_scales(residual, depth)
    if model["kind"] == "transformer":
        lines = _transformer_lines(init, model, framework, embedding_var(residual, depth))
    else:
        lines = [
            f"# model.kind=resmlp: x = LayerNorm(act(input(x))), {depth} blocks, then output(x);",
            "# block i (layers blocks.<i>.fc1 and blocks.<i>.fc2: the paths the rules match):",
            f"#   {_BLOCKS[model.get('norm', 'none')]}",
        ]
    if residual in GATED:
        gate = f"# init.residual={residual}: alpha is a learnable scalar per block, 0 at init:"
        lines += [gate, f"#   {_GATES[framework]}"]
    else:
        lines.append(
            f"# init.residual={residual}: alpha = {s.alpha:.6g}, skip = {s.skip:.6g}, constants "
            "of your forward pass"
        )
    return "\n".join(lines) + "\n"


# A transformer's blocks as model.norm builds them (pipeline.core.transformer), and its
# embedding tables' draw in each framework's own code.
_T_BLOCKS = {
    "none": "x = skip * x + alpha * attn(x); x = skip * x + alpha * mlp(x)",
    "pre": "x = skip * x + alpha * attn(LayerNorm(x)); x = skip * x + alpha * mlp(LayerNorm(x))",
    "rmsnorm": "x = skip * x + alpha * attn(RMSNorm(x)); x = skip * x + alpha * mlp(RMSNorm(x))",
    "post": "x = LayerNorm(skip * x + alpha * attn(x)); x = LayerNorm(skip * x + alpha * mlp(x))",
}
_TABLES = {
    "flax": "nn.Embed(n, width, embedding_init=jax.nn.initializers.normal({std}))",
    "keras": "keras.layers.Embedding(n, width, "
    "embeddings_initializer=keras.initializers.RandomNormal(stddev={std}))",
    "torch": "torch.nn.init.normal_(embedding.weight, mean=0.0, std={std})",
}


def _transformer_lines(init: dict, model: dict, framework: str, embed_var: float) -> list[str]:
    """The transformer's forward pass and what no kernel initializer sets: the attention logit
    scale and the embedding tables' std (init.embedding_std, times T-Fixup's factor)."""
    from pipeline.core.transformer import logit_scale

    width, heads, depth = int(model["width"]), int(model.get("heads", 1)), int(model["depth"])
    name = model.get("attention_scale", "1/sqrt(d)")
    scale = logit_scale(name, width // heads)
    std = float(init.get("embedding_std", 1.0)) * math.sqrt(embed_var)
    norm = model.get("norm", "none")
    final = "LayerNorm(x)" if norm == "pre" else "RMSNorm(x)" if norm == "rmsnorm" else "x"
    return [
        f"# model.kind=transformer: x = embed(tokens) + pos(positions), {depth} blocks, then "
        f"output({final}[last position]);",
        "# block i (blocks.<i>.attn.{query,key,value,out}, blocks.<i>.mlp.{fc1,fc2}: the paths "
        "the rules match), mlp(x) = fc2(act(fc1(x))), fc1 to 4 x width:",
        f"#   {_T_BLOCKS[norm]}",
        f"# attention: {heads} heads of d = {width // heads}, logits = {scale:.6g} * q.k "
        f"(model.attention_scale={name}), bidirectional",
        f"# embed and pos tables: N(0, {std:.6g}^2): {_TABLES[framework].format(std=f'{std:.6g}')}",
    ]


def _bias_note(s: InitSpec, fan_in: float | None, build: str) -> str:
    """A comment above a Flax or Keras bias that is PyTorch's default: for which fan_in."""
    if _torch_bias_limit(s, fan_in) is None:
        return ""
    return (
        f"# PyTorch's default bias U(+-1/sqrt(fan_in)) for fan_in = {fan_in:g} (a hidden layer); "
        f"other layers: {build}(cfg, fan_in=...)\n"
    )


def _torch_lines(s: InitSpec, indent: str) -> str:
    """The statements that initialize ``m`` as ``s`` says."""
    kernel, multiplier = _torch_kernel(s)
    lines = [kernel.source("m.weight")]
    per_fan_in = _torch_per_fan_in(s)
    if per_fan_in is not None:
        lines.append(f"m.weight.mul_({_literal(per_fan_in)} / math.sqrt(m.weight[0].numel()))")
    if multiplier != 1.0:
        lines.append(f"m.weight.mul_({_literal(multiplier)})")
    lines.append("if m.bias is not None:")
    bias = _torch_bias(s)
    if bias is TORCH_BIAS:
        lines.append("    limit = 1 / math.sqrt(m.weight[0].numel())  # 1/sqrt(fan_in)")
        lines.append("    torch.nn.init.uniform_(m.bias, -limit, limit)")
    else:
        lines.append(f"    {bias.source('m.bias')}")
    return "".join(f"{indent}{line}\n" for line in lines)


def _torch_snippet(s: InitSpec, specs: list[tuple[str, InitSpec]]) -> str:
    if not specs:
        return (
            "import torch\n\n\n"
            "def init_weights(module: torch.nn.Module) -> torch.nn.Module:\n"
            "    layers = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)\n"
            "    with torch.no_grad():\n"
            "        for m in module.modules():\n"
            "            if isinstance(m, layers):\n"
            f"{_torch_lines(s, ' ' * 16)}"
            "    return module\n"
        )
    # init.rules: the module's name as a path (blocks.0.fc -> blocks/0/fc); the last rule wins.
    branches = "".join(
        f"{'if' if i == 0 else 'elif'} fnmatch.fnmatchcase(path, {json.dumps(layer)}):\n"
        f"{_torch_lines(r, ' ' * 4)}"
        for i, (layer, r) in enumerate(reversed(specs))
    )
    branches += f"else:\n{_torch_lines(s, ' ' * 4)}"
    body = "".join(" " * 16 + line + "\n" for line in branches.splitlines())
    return (
        "import fnmatch\n\nimport torch\n\n\n"
        "def init_weights(module: torch.nn.Module) -> torch.nn.Module:\n"
        "    layers = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)\n"
        "    with torch.no_grad():\n"
        "        for name, m in module.named_modules():\n"
        "            if isinstance(m, layers):\n"
        '                path = name.replace(".", "/")  # init.rules match Flax-style paths\n'
        f"{body}"
        "    return module\n"
    )
