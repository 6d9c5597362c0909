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

``init.parametrization`` (muP, NTK, depth-muP: ``pipeline.core.parametrization``) also sets a
learning-rate and weight-decay multiplier per parameter. ``rate_table`` reads them from the
engine (``pipeline.engine.rows.leaf_multipliers`` on the built-in network) as parameter-path
globs; ``optax_for`` builds the config's optimizer with them (``optax.multi_transform``),
``torch_param_groups`` gives ``torch.optim`` parameter groups, and the Flax and PyTorch snippets
print the same as code (``optimizer_code``); Keras gets them as a comment (docs/mup.md).

Every snippet ends with the optimizer at the config's learning rate (``optimizer_code``, the
engine's chain: clipping, L2 decay added to the gradient, sgd / momentum / adam, the warmup):
``optimizer = optax...`` (Flax), ``make_optimizer(model)`` over ``torch.optim`` (PyTorch),
``optimizer = keras.optimizers...`` (Keras; its L2 decay a regularizer). For an answer of a best
file (``source: recommendation``) that rate is LR*, and a comment gives its basin.
"""

from __future__ import annotations

import fnmatch
import importlib
import json
import math
import os
import re
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


def parametrization_note(cfg, framework: str) -> str:
    """What ``init.parametrization`` sets that no initializer can, as comments: the read-out's
    std (in the initializers), depth_mup's branch multiplier and muP's attention scale (forward
    pass); for Keras also the per-layer learning-rate and weight-decay multipliers, which the
    Flax and PyTorch snippets give as optimizer code instead (``optimizer_code``)."""
    init, model, _ = _sections(cfg)
    name = init.get("parametrization", "sp")
    if name == "sp":
        return ""
    from pipeline.core.parametrization import branch_multiplier

    if model.get("kind", "mlp") == "custom":
        return (
            f"# init.parametrization={name}: the per-layer multipliers of your module are not "
            "exported (docs/mup.md); train it with the engine, or apply them by hand\n"
        )
    depth = model.get("depth") or 1
    d = depth / (model.get("base_depth") or depth)
    lines = [
        f"# init.parametrization={name}, width {model.get('width')} over base "
        f"{model.get('base_width') or model.get('width')} (docs/mup.md): the read-out's std "
        "multiplier is in the initializers below;",
    ]
    if framework == "keras":  # no coupled per-variable decay in Keras' optimizers: docs/mup.md
        rows = ", ".join(f"{r.glob} x{r.lr:.4g}" for r in rate_table(cfg))
        adam = _trial_of(cfg)["train.optimizer"] == "adam"
        lines.append(
            f"#   learning rate per parameter ({'Adam' if adam else 'SGD'}; not generated for "
            f"Keras): train.learning_rate times {rows}"
        )
    else:
        lines.append("#   per-parameter learning rates and weight decay: the optimizer code below")
    if name == "depth_mup":
        lines.append(
            f"#   each residual branch's output x {branch_multiplier(name, d):.4g} (forward)"
        )
    if model.get("kind") == "transformer":
        from pipeline.core.transformer import attention_scale

        flat = {f"model.{k}": v for k, v in model.items()} | {"init.parametrization": name}
        lines.append(f"#   attention logits x {attention_scale(flat):.4g} (muP's 1/d)")
    return "\n".join(lines) + "\n"


# --- init.parametrization's learning rates and weight decay as optimizer code ------------------
#
# The multipliers are the engine's own: ``pipeline.engine.rows.leaf_multipliers`` on the
# built-in network's layout (roles from shapes at the base width and twice the width, as the
# engine infers them), written as a table of parameter-path globs so that a PyTorch module named
# like the built-in network (``torch_param_path``) reads the same rows.


class LeafRate(NamedTuple):
    """One row of a parametrization's table: the parameters whose path matches ``glob`` train
    at train.learning_rate x ``lr`` with L2 weight decay train.weight_decay x ``decay``."""

    glob: str
    lr: float
    decay: float


def _trial_of(cfg):
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


def _builtin_view(trial):
    """(layout, structure) of a trial's built-in network. The data's sizes stand in as 16
    features (a 4x4 image for the CNN), 2 classes and 8 tokens: they do not change with the
    width, so no role or multiplier depends on them."""
    from pipeline.core.model import BUILTIN_KINDS, Structure
    from pipeline.engine.factory import net_for

    kind = trial["model.kind"]
    if kind not in BUILTIN_KINDS:
        raise ValueError(
            f"model.kind={kind}: the per-layer rates of a user's module are not exported "
            f"(built-in kinds: {', '.join(BUILTIN_KINDS)}); train it with the engine"
        )
    transformer = kind == "transformer"
    structure = Structure(
        trial["model.activation"], trial["model.depth"], trial["model.width"], 16, 2, kind,
        None, trial["model.norm"], trial["model.heads"] if transformer else 1,
        8 if transformer else 0,
    )  # fmt: skip
    return net_for(structure).layout, structure


def _row_for(rows: list[LeafRate], path: str) -> LeafRate:
    for row in rows:
        if fnmatch.fnmatchcase(path, row.glob):
            return row
    raise ValueError(
        f"no row of the rate table matches parameter {path!r} (globs: "
        f"{', '.join(r.glob for r in rows)}): name the layers as the built-in network does"
    )


def rate_table(cfg) -> list[LeafRate]:
    """The learning-rate and weight-decay multipliers of ``init.parametrization`` for the
    config's built-in network, one row per parameter-path glob, first match wins.

    A parameter of a stacked layer (``hidden/dense/kernel``: the scanned hidden layers) gets the
    glob ``hidden/*kernel``, which also matches one module per layer (``hidden/0/kernel``,
    PyTorch's ``hidden.0.weight``); leaves whose short globs coincide but whose rates differ keep
    a longer one (``blocks*/norm/bias``). ``sp``: one row, ``*``, at 1.

    >>> rate_table({"init": {"parametrization": "mup"}, "model": {"width": 256,
    ...     "base_width": 64, "depth": 2}, "train": {"optimizer": "adam"}})  # doctest: +SKIP
    [LeafRate(glob='input/kernel', lr=1.0, decay=1.0), ...,
     LeafRate(glob='hidden/*kernel', lr=0.25, decay=4.0), ...]
    """
    from pipeline.engine.rows import leaf_multipliers

    trial = _trial_of(cfg)
    if trial["init.parametrization"] == "sp":
        return [LeafRate("*", 1.0, 1.0)]
    layout, structure = _builtin_view(trial)
    scaled = leaf_multipliers(trial, layout, structure)

    # The scanned modules (hidden, blocks): every leaf under one is a stack of layers, its norms
    # and gates included (the layout marks only kernels and biases as stacked).
    scanned = {leaf.path.split("/")[0] for leaf in layout.leaves if leaf.stack}

    def glob(leaf, short: bool) -> str:
        top, _, rest = leaf.path.partition("/")
        if top not in scanned or not rest:
            return leaf.path
        return f"{top}/*{rest.rsplit('/', 1)[-1]}" if short else f"{top}*/{rest}"

    groups: dict[str, list] = {}
    for leaf, m in zip(layout.leaves, scaled):
        groups.setdefault(glob(leaf, True), []).append((leaf, m))
    rows = []
    for short, members in groups.items():
        rates = {(m.lr, m.decay) for _, m in members}
        if len(rates) == 1:
            rows.append(LeafRate(short, *rates.pop()))
        else:
            rows += [LeafRate(glob(leaf, False), m.lr, m.decay) for leaf, m in members]
    for leaf, m in zip(layout.leaves, scaled):  # every leaf, as Flax and as one module per layer
        top, _, rest = leaf.path.partition("/")
        for path in {leaf.path, f"{top}/0/{rest}" if top in scanned else leaf.path}:
            row = _row_for(rows, path)
            if (row.lr, row.decay) != (m.lr, m.decay):
                raise AssertionError(f"rate table: {path} reads {row}, the engine {m}")
    return rows


def lr_multipliers(cfg) -> dict[str, dict[str, float]]:
    """``rate_table`` as plain data for a best file: ``{"lr": {glob: multiplier}, "weight_decay":
    {glob: multiplier}}``."""
    rows = rate_table(cfg)
    return {
        "lr": {r.glob: float(r.lr) for r in rows},
        "weight_decay": {r.glob: float(r.decay) for r in rows},
    }


def _schedule(peak: float, warmup_steps: int):
    """train.learning_rate's schedule: linear warmup over ``warmup_steps`` updates (update k
    uses min(1, (k+1) / warmup_steps), ``pipeline.core.train.warmup_factor``), then constant."""
    if not warmup_steps:
        return peak
    import jax.numpy as jnp

    return lambda count: peak * jnp.minimum(1.0, (count + 1) / warmup_steps)


def _tree_path(path) -> str:
    """A pytree key path as ``hidden/dense/kernel``: dict keys and list indices (an NNX
    Variable's ``.value`` attribute is not part of the parameter's name)."""
    keys = (getattr(k, "key", getattr(k, "idx", None)) for k in path)
    return "/".join(str(k) for k in keys if k is not None)


def optax_for(cfg):
    """The config's optimizer as an ``optax.GradientTransformation`` with the per-parameter
    learning rates and weight decay of ``init.parametrization`` (``rate_table``), in the
    engine's order (``pipeline.core.train.make_optimizer``): clipping by global norm, L2 decay
    added to the gradient, the direction (sgd, momentum, adam), the learning rate with its
    warmup. Parameters are matched by their path in the tree (``hidden/dense/kernel``).

    >>> tx = optax_for(read_best("conf/best/my_study.yaml"))  # doctest: +SKIP
    >>> opt_state = tx.init(params)  # the built-in network's Flax params  # doctest: +SKIP
    """
    import jax
    import optax

    t, rows = _trial_of(cfg), rate_table(cfg)
    lr, wd, warmup = t["train.learning_rate"], t["train.weight_decay"], t["train.warmup_steps"]

    def direction(multiplier: float):
        rate = _schedule(lr * multiplier, warmup)
        if t["train.optimizer"] == "adam":
            return optax.adam(rate)
        momentum = t["train.momentum"] if t["train.optimizer"] == "momentum" else None
        return optax.sgd(rate, momentum=momentum)

    def labels(params):
        def label(path, _):
            return _row_for(rows, _tree_path(path)).glob

        return jax.tree_util.tree_map_with_path(label, params)

    per_glob = {
        r.glob: optax.chain(*([optax.add_decayed_weights(wd * r.decay)] if wd else []),
                            direction(r.lr))
        for r in rows
    }  # fmt: skip
    clip = t["train.clip_norm"]
    head = [optax.clip_by_global_norm(clip)] if clip is not None else []
    return optax.chain(*head, optax.multi_transform(per_glob, labels))


# A PyTorch parameter's own name -> ours, by its module (``torch_param_path``).
_TORCH_NORMS = ("LayerNorm", "RMSNorm", "GroupNorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d")


def torch_param_path(module_name: str, module, name: str) -> str:
    """A PyTorch parameter's path as the rate table and the rules match it: the module's name as
    a path (``torch_path``) and the weight named as Flax names it (a Linear's or Conv's
    ``kernel``, a norm's ``scale``, an Embedding's ``embedding``)."""
    import torch

    if name == "weight":
        if isinstance(module, torch_layers()):
            name = "kernel"
        elif type(module).__name__ in _TORCH_NORMS:
            name = "scale"
        elif isinstance(module, torch.nn.Embedding):
            name = "embedding"
    return torch_path(f"{module_name}.{name}" if module_name else name)


def torch_param_groups(cfg, module) -> list[dict]:
    """``torch.optim`` parameter groups of ``module`` (named like the built-in network:
    ``torch_param_path``), one per ``rate_table`` row: ``{"params": [...], "lr":
    train.learning_rate x lr, "weight_decay": train.weight_decay x decay}``. torch.optim's
    SGD and Adam add ``weight_decay`` to the gradient, as the engine does. Warmup and clipping
    are the caller's (``snippet(cfg, "torch")`` prints both).

    >>> opt = torch.optim.Adam(torch_param_groups(best, model))  # doctest: +SKIP
    """
    t, rows = _trial_of(cfg), rate_table(cfg)
    groups: dict[str, dict] = {}
    for module_name, m in module.named_modules():
        for name, p in m.named_parameters(recurse=False):
            row = _row_for(rows, torch_param_path(module_name, m, name))
            group = groups.setdefault(
                row.glob,
                {
                    "params": [],
                    "lr": t["train.learning_rate"] * row.lr,
                    "weight_decay": t["train.weight_decay"] * row.decay,
                },
            )
            group["params"].append(p)
    return list(groups.values())


def lr_comment(cfg) -> str:
    """For an answer of a best file (an entry with an ``answer`` block): its learning rate and
    the basin around it as a comment line; empty otherwise."""
    answer = cfg.get("answer") if isinstance(cfg, dict) else None
    if not answer:
        return ""
    basin = answer.get("lr_basin")
    if basin and basin[0] == basin[1]:
        where = f"every seed reached the target at {basin[0]:.3g}, not at its neighbours"
    elif basin:
        where = f"every seed reached the target from {basin[0]:.3g} to {basin[1]:.3g}"
    else:
        where = "the fastest rate tried; at none did every seed reach the target"
    if answer.get("best_lr_at_edge"):
        where += "; at the edge of the rates tried"
    return (
        f"# learning rate {answer['learning_rate']:.3g} ({where}): {answer['arm']} for "
        f"{answer['network']}\n"
    )


def _constants_source(cfg, decay: bool) -> str:
    """``LEARNING_RATE`` (and ``WEIGHT_DECAY``) as the optimizer snippets start from them."""
    t = _trial_of(cfg)
    text = lr_comment(cfg) + (
        f"LEARNING_RATE = {_literal(t['train.learning_rate'])}  # train.learning_rate\n"
    )
    if decay:
        text += (
            f"WEIGHT_DECAY = {_literal(t['train.weight_decay'])}  # train.weight_decay: L2, added "
            "to the gradient\n"
        )
    return text


def _rates_source(cfg) -> str:
    """The constants and the table every per-parameter optimizer snippet starts from."""
    t = _trial_of(cfg)
    rows = "".join(f"    ({json.dumps(r.glob)}, {_literal(r.lr)}, {_literal(r.decay)}),\n"
                   for r in rate_table(cfg))  # fmt: skip
    return (
        f"{_constants_source(cfg, decay=True)}"
        f"# init.parametrization={t['init.parametrization']}, {t['train.optimizer']}: (parameter "
        "path glob, learning-rate multiplier,\n# weight-decay multiplier), the first match wins\n"
        f"RATES = [\n{rows}]\n"
    )


def optimizer_code(cfg, framework: str) -> str:
    """The config's optimizer as code to paste, in the engine's order
    (``pipeline.core.train.make_optimizer``): clipping, L2 decay added to the gradient, the
    direction (sgd, momentum, adam) at train.learning_rate with its warmup; for an answer of a
    best file its basin as a comment. Under ``init.parametrization`` other than sp, with the
    per-parameter rates: ``optax_for`` (``framework="flax"``) or ``torch_param_groups``
    (``"torch"``) as code; Keras, and a user's module, get the base rate and a comment."""
    if framework not in FORMATS:
        raise ValueError(f"unknown format {framework!r}; allowed: {', '.join(FORMATS)}")
    t = _trial_of(cfg)
    per_parameter = t["init.parametrization"] != "sp"
    if per_parameter and (framework == "keras" or t["model.kind"] == "custom"):
        where = "the note above" if framework == "keras" else "docs/mup.md"
        return (
            f"{_constants_source(cfg, decay=bool(t['train.weight_decay']))}"
            f"# init.parametrization={t['init.parametrization']}: the base rate; each "
            f"parameter's multiplier is not generated here ({where})\n"
        )
    if framework == "flax":
        return _optax_source(cfg, per_parameter)
    if framework == "torch":
        return _torch_optimizer_source(cfg, per_parameter)
    return _keras_optimizer_source(cfg)


def _optax_direction(t, rate: str) -> str:
    """train.optimizer as its optax call at learning rate ``rate`` (a name in the snippet)."""
    if t["train.optimizer"] == "adam":
        return f"optax.adam(learning_rate={rate})"
    if t["train.optimizer"] == "momentum":  # train.momentum
        return f"optax.sgd(learning_rate={rate}, momentum={_literal(t['train.momentum'])})"
    return f"optax.sgd(learning_rate={rate})"


def _warmup_source(warmup: int, name: str, peak: str, indent: str = "") -> str:
    """train.warmup_steps as an optax schedule ``name`` of ``peak`` (update k uses
    min(1, (k+1) / warmup_steps) of it: ``pipeline.core.train.warmup_factor``)."""
    return (
        f"{indent}# train.warmup_steps={warmup}: update k uses min(1, (k + 1) / {warmup}) of it\n"
        f"{indent}{name} = lambda count: {peak} * jnp.minimum(1.0, (count + 1) / {warmup})\n"
    )


def _optax_source(cfg, per_parameter: bool) -> str:
    t = _trial_of(cfg)
    warmup, clip, decay = t["train.warmup_steps"], t["train.clip_norm"], t["train.weight_decay"]
    numpy = "import jax.numpy as jnp\n" if warmup else ""
    clip_line = (
        "" if clip is None else f"optax.clip_by_global_norm({_literal(clip)}),  # train.clip_norm\n"
    )
    if not per_parameter:
        rate = "learning_rate" if warmup else "LEARNING_RATE"
        chain = [
            *([clip_line] if clip_line else []),
            *(["optax.add_decayed_weights(WEIGHT_DECAY),\n"] if decay else []),
            f"{_optax_direction(t, rate)},\n",
        ]
        if len(chain) == 1:
            made = _optax_direction(t, rate) + "\n"
        else:
            made = "optax.chain(\n" + "".join(f"    {x}" for x in chain) + ")\n"
        return (
            f"\n\n{numpy}import optax\n\n"
            f"{_constants_source(cfg, decay=bool(decay))}"
            f"{_warmup_source(warmup, 'learning_rate', 'LEARNING_RATE') if warmup else ''}"
            f"optimizer = {made}"
            "# opt_state = optimizer.init(params); updates, opt_state = optimizer.update(grads, "
            "opt_state, params)\n"
        )
    rate = _warmup_source(warmup, "rate", "peak", "    ") if warmup else "    rate = peak\n"
    decayed = "optax.add_decayed_weights(WEIGHT_DECAY * decay), " if decay else ""
    head = f"    {clip_line}" if clip_line else ""
    return (
        f"\n\nimport fnmatch\n\nimport jax\n{numpy}import optax\n\n"
        f"{_rates_source(cfg)}\n\n"
        "def rate_labels(params):\n"
        '    """Each parameter\'s RATES glob, by its path in the tree ("hidden/dense/kernel")."""\n'
        "\n"
        "    def label(path, _):\n"
        '        keys = (getattr(k, "key", getattr(k, "idx", None)) for k in path)  # not .value\n'
        '        name = "/".join(str(k) for k in keys if k is not None)\n'
        "        for glob, _, _ in RATES:\n"
        "            if fnmatch.fnmatchcase(name, glob):\n"
        "                return glob\n"
        '        raise KeyError(f"no RATES glob matches parameter {name}")\n'
        "\n"
        "    return jax.tree_util.tree_map_with_path(label, params)\n\n\n"
        "def direction(peak: float, decay: float):\n"
        '    """One RATES row\'s optimizer: its L2 decay, then the step at its learning rate."""\n'
        f"{rate}"
        f"    return optax.chain({decayed}{_optax_direction(t, 'rate')})\n\n\n"
        "tx = optax.chain(\n"
        f"{head}"
        "    optax.multi_transform(\n"
        "        {glob: direction(LEARNING_RATE * lr, decay) for glob, lr, decay in RATES},\n"
        "        rate_labels,\n"
        "    ),\n"
        ")\n"
        "optimizer = tx\n"
        "# opt_state = tx.init(params); updates, opt_state = tx.update(grads, opt_state, params)\n"
    )


def _torch_optimizer_source(cfg, per_parameter: bool) -> str:
    t = _trial_of(cfg)
    kind, warmup, clip = t["train.optimizer"], t["train.warmup_steps"], t["train.clip_norm"]
    decay = t["train.weight_decay"]
    params = "param_groups(model)" if per_parameter else "model.parameters()"
    extra = ""
    if kind == "momentum":
        extra += f", momentum={_literal(t['train.momentum'])}"  # train.momentum
    if decay and not per_parameter:  # a group's own weight_decay otherwise
        extra += ", weight_decay=WEIGHT_DECAY"
    make = f"torch.optim.{'Adam' if kind == 'adam' else 'SGD'}({params}, lr=LEARNING_RATE{extra})"
    use, steps = ["optimizer = make_optimizer(model)"], ["optimizer.step()"]
    if clip is not None:
        steps.insert(0, f"torch.nn.utils.clip_grad_norm_(model.parameters(), {_literal(clip)})")
    code = (
        "def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:\n"
        f'    """train.optimizer={kind} at train.learning_rate."""\n'
        f"    return {make}\n"
    )
    if warmup:
        code += (
            "\n\ndef make_scheduler(optimizer: torch.optim.Optimizer):\n"
            f'    """train.warmup_steps={warmup}: step k uses min(1, (k + 1) / {warmup}) of the '
            'rate."""\n'
            "    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: min(1.0, (k + 1) / "
            f"{warmup}))\n"
        )
        use.append("scheduler = make_scheduler(optimizer)")
        steps.append("scheduler.step()")
    code += f"\n\n# {'; '.join(use)}\n# each step, after loss.backward(): {'; '.join(steps)}\n"
    if not per_parameter:
        return f"\n\nimport torch\n\n{_constants_source(cfg, decay=bool(decay))}\n\n{code}"
    norms = "".join(f"    torch.nn.{n},\n" for n in _TORCH_NORMS)
    return (
        "\n\nimport fnmatch\n\nimport torch\n\n"
        f"{_rates_source(cfg)}"
        "# A parameter's path: its module's name with / for . and the weight named as in Flax\n"
        "# (a Linear's or Conv's kernel, a norm's scale, an Embedding's embedding):\n"
        "# hidden.0.weight -> hidden/0/kernel\n"
        "LAYERS = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)\n"
        f"NORMS = (\n{norms})\n\n\n"
        "def param_path(module_name: str, module: torch.nn.Module, name: str) -> str:\n"
        '    if name == "weight" and isinstance(module, LAYERS):\n'
        '        name = "kernel"\n'
        '    elif name == "weight" and isinstance(module, NORMS):\n'
        '        name = "scale"\n'
        '    elif name == "weight" and isinstance(module, torch.nn.Embedding):\n'
        '        name = "embedding"\n'
        '    return f"{module_name}.{name}".lstrip(".").replace(".", "/")\n\n\n'
        "def param_groups(model: torch.nn.Module) -> list[dict]:\n"
        '    """torch.optim parameter groups, one per RATES row that matches a parameter."""\n'
        "    groups = {}\n"
        "    for module_name, module in model.named_modules():\n"
        "        for name, p in module.named_parameters(recurse=False):\n"
        "            path = param_path(module_name, module, name)\n"
        "            row = next((r for r in RATES if fnmatch.fnmatchcase(path, r[0])), None)\n"
        "            if row is None:\n"
        '                raise KeyError(f"no RATES glob matches parameter {path}")\n'
        "            glob, lr, decay = row\n"
        "            lr, decay = LEARNING_RATE * lr, WEIGHT_DECAY * decay\n"
        '            groups.setdefault(glob, {"params": [], "lr": lr, "weight_decay": decay})\n'
        '            groups[glob]["params"].append(p)\n'
        f"    return list(groups.values())\n\n\n{code}"
    )


def _keras_optimizer_source(cfg) -> str:
    """train.optimizer as a Keras optimizer: the rate (its warmup a schedule), momentum,
    clipping by global norm (``global_clipnorm``); the engine's L2 decay, added to the gradient,
    is a regularizer in Keras (its optimizers' ``weight_decay`` is decoupled, AdamW-style)."""
    t = _trial_of(cfg)
    kind, warmup, clip = t["train.optimizer"], t["train.warmup_steps"], t["train.clip_norm"]
    decay = t["train.weight_decay"]
    rate = "Warmup()" if warmup else "LEARNING_RATE"
    args = [f"learning_rate={rate}"]
    if kind == "momentum":
        args.append(f"momentum={_literal(t['train.momentum'])}")
    if kind == "adam":
        args.append("epsilon=1e-08")  # optax's
    if clip is not None:
        args.append(f"global_clipnorm={_literal(clip)}")
    code = f"\n\nimport keras\n\n{_constants_source(cfg, decay=bool(decay))}"
    if warmup:
        code += (
            "\n\nclass Warmup(keras.optimizers.schedules.LearningRateSchedule):\n"
            f'    """train.warmup_steps={warmup}: step k uses min(1, (k + 1) / {warmup}) of the '
            'rate."""\n\n'
            "    def __call__(self, step):\n"
            '        k = keras.ops.cast(step, "float32")\n'
            f"        return LEARNING_RATE * keras.ops.minimum(1.0, (k + 1.0) / {warmup})\n\n\n"
        )
    name = "Adam" if kind == "adam" else "SGD"
    code += f"optimizer = keras.optimizers.{name}({', '.join(args)})\n"
    if decay:
        code += (
            "# train.weight_decay: L2 added to the gradient, d/dw of WEIGHT_DECAY / 2 * w^2:\n"
            "regularizer = keras.regularizers.L2(WEIGHT_DECAY / 2)\n"
            "# keras.layers.Dense(units, ..., kernel_regularizer=regularizer, "
            "bias_regularizer=regularizer)\n"
        )
    return code


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
    """Ready-to-paste code that builds the same initializers as ``to_<framework>(cfg)`` and the
    optimizer at the config's learning rate (``optimizer_code``: for an answer of a best file
    LR*, its basin as a comment); under ``init.parametrization`` other than sp with its
    per-parameter learning rates and weight decay: ``optax_for(cfg)`` (Flax) or
    ``torch_param_groups(cfg, model)`` (PyTorch) as code; Keras gets them as a comment
    (docs/mup.md)."""
    text = _init_snippet(cfg, framework, title)
    imported = {line for line in text.splitlines() if line.startswith(("import ", "from "))}
    code = "\n".join(x for x in optimizer_code(cfg, framework).splitlines() if x not in imported)
    code = re.sub(r"\n{4,}", "\n\n\n", code.strip("\n"))  # an import left out: no gap
    return text + "\n\n" + code + "\n"


def _init_snippet(cfg, framework: str, title: str = "") -> str:
    """The initializers of ``snippet``.

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
    head += parametrization_note(cfg, framework)
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
    from pipeline.core.residual import embedding_var, residual_scales

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
