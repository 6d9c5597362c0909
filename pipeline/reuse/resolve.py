"""What a best entry or run config initializes, framework-free: the resolution every export
and ``pipeline.reuse.best.load_initializer`` share.

``init_spec`` reads a best-config entry (``read_best``) or a run config, missing keys at their
``conf/config.yaml`` defaults, into an ``InitSpec``; with a layer path, the one its ``init.rules``
give that layer, resolved by the engine's own per-parameter rule resolution
(``pipeline.engine.rows.rule_inits``, which ``leaf_inits`` applies to every leaf of a network).
"""

from __future__ import annotations

from typing import NamedTuple

from pipeline.core.initializers import resolve_gain
from pipeline.core.model import EMBEDDINGS, rules_in_force


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


def sections(cfg) -> tuple[dict, dict, dict]:
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


def trial_of(cfg):
    """The ``TrialSpec`` of a best entry, run config or partial nested dict (defaults fill in)."""
    from omegaconf import DictConfig, OmegaConf

    from pipeline.config import RUN_SECTIONS, TrialSpec

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    flat = {
        f"{s}.{k}": v
        for s in RUN_SECTIONS
        for k, v in (cfg.get(s) or {}).items()
        if k != "gain_value"  # written by `make best` beside the spec
    }
    return TrialSpec.from_flat(flat, fill_defaults=True)


def init_spec(cfg, layer: str | None = None) -> InitSpec:
    """The initializers of a best-config entry (``read_best``) or a full run config; with
    ``layer`` (a module path such as ``"blocks/0/out_proj"``), the ones its ``init.rules`` give
    that layer's ``kernel`` and ``bias`` (a rule's ``scale`` is folded into the gain and the bias
    moments; a scale of 0 is the zeros initializer).

    A plain dict may leave keys out (``{"init": {"weights": "he_normal"}}``); they take their
    ``conf/config.yaml`` defaults.
    """
    init, model, structure = sections(cfg)
    kernel_scale = bias_scale = 1.0
    rules = init.get("rules") or []
    if layer is not None and rules:
        from pipeline.core.rules import BIAS_KEYS, WEIGHT_KEYS
        from pipeline.engine.rows import rule_inits  # the engine's own per-parameter resolution

        try:
            kernel = rule_inits(
                {k: init[k] for k in WEIGHT_KEYS}, rules, f"{layer}/kernel", structure
            )
            bias = rule_inits({k: init[k] for k in BIAS_KEYS}, rules, f"{layer}/bias", structure)
        except (KeyError, TypeError):
            raise ValueError(
                f"a rule's scale formula needs the structure ({', '.join(structure)} known): "
                "export from a best file written by `make best`"
            ) from None
        kernel_scale, bias_scale = kernel.pop("scale"), bias.pop("scale")
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
    init, _, _ = sections(cfg)
    layers = []
    for rule in init.get("rules") or []:
        if rule["match"] in EMBEDDINGS:  # a transformer's tables: its note says how to draw them
            continue
        layer = rule["match"].removesuffix("/kernel").removesuffix("/bias")
        if layer not in layers:
            layers.append(layer)
    return layers


def hidden_fan_in(cfg) -> float | None:
    """A hidden layer's fan_in (width; 9 x width for the CNN's 3x3 convolutions): the fan
    PyTorch's default bias is scaled by in Flax and Keras when no layer's ``fan_in`` is given."""
    _, model, structure = sections(cfg)
    width = structure.get("width")
    return float(width) * (9 if model.get("kind") == "cnn" else 1) if width else None


def torch_path(name: str) -> str:
    """A PyTorch module name as the Flax-style path rules match (``blocks.0.fc`` ->
    ``blocks/0/fc``): a module's ``weight`` is our ``kernel``."""
    return name.replace(".", "/")
