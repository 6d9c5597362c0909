"""The config's optimizer in each framework, in the engine's order
(``pipeline.core.train.make_optimizer``: clipping, L2 decay added to the gradient, sgd / momentum
/ adam, the warmup), with init.parametrization's per-parameter rates (``pipeline.reuse.rates``):
``optax_for`` and ``torch_param_groups`` build them, ``optimizer_code`` prints them:
``optimizer = optax...`` (Flax), ``make_optimizer(model)`` over ``torch.optim`` (PyTorch),
``optimizer = keras.optimizers...`` (Keras; its L2 decay a regularizer, its per-parameter rates a
comment: docs/mup.md). For an answer of a best file (``source: recommendation``) the rate is LR*,
and a comment gives its basin.
"""

from __future__ import annotations

import json
from typing import NamedTuple

from pipeline.core.names import OPTIMIZERS, check_registry
from pipeline.reuse.calls import FORMATS, literal
from pipeline.reuse.export_torch import torch_layers
from pipeline.reuse.rates import rate_table, row_for
from pipeline.reuse.resolve import torch_path, trial_of


class FrameworkOptimizer(NamedTuple):
    """One optimizer of train.optimizer in each framework: optax's function, torch.optim's and
    keras.optimizers' class, and what it takes beside the rate."""

    optax: str
    torch: str
    keras: str
    momentum: bool = False  # takes train.momentum
    keras_epsilon: str = ""  # Keras Adam's epsilon set to optax's (Keras' own is 1e-7)


# One entry per name of pipeline.core.names.OPTIMIZERS, the engine's make_optimizer chain.
FRAMEWORK_OPTIMIZERS = {
    "sgd": FrameworkOptimizer("sgd", "SGD", "SGD"),
    "momentum": FrameworkOptimizer("sgd", "SGD", "SGD", momentum=True),
    "adam": FrameworkOptimizer("adam", "Adam", "Adam", keras_epsilon="1e-08"),
}
check_registry(FRAMEWORK_OPTIMIZERS, OPTIMIZERS)


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

    >>> tx = optax_for(read_best("conf/best/my_study.yaml"))
    >>> opt_state = tx.init(params)  # the built-in network's Flax params
    """
    import jax
    import optax

    t, rows = trial_of(cfg), rate_table(cfg)
    lr, wd, warmup = t["train.learning_rate"], t["train.weight_decay"], t["train.warmup_steps"]

    def direction(multiplier: float):
        rate = _schedule(lr * multiplier, warmup)
        o = FRAMEWORK_OPTIMIZERS[t["train.optimizer"]]
        return getattr(optax, o.optax)(
            rate, **({"momentum": t["train.momentum"]} if o.momentum else {})
        )

    def labels(params):
        def label(path, _):
            return row_for(rows, _tree_path(path)).glob

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
TORCH_NORMS = ("LayerNorm", "RMSNorm", "GroupNorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d")


def torch_param_path(module_name: str, module, name: str) -> str:
    """A PyTorch parameter's path as the rate table and the rules match it: the module's name as
    a path (``torch_path``) and the weight named as Flax names it (a Linear's or Conv's
    ``kernel``, a norm's ``scale``, an Embedding's ``embedding``)."""
    import torch

    if name == "weight":
        if isinstance(module, torch_layers()):
            name = "kernel"
        elif type(module).__name__ in TORCH_NORMS:
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

    >>> opt = torch.optim.Adam(torch_param_groups(best, model))
    """
    t, rows = trial_of(cfg), rate_table(cfg)
    groups: dict[str, dict] = {}
    for module_name, m in module.named_modules():
        for name, p in m.named_parameters(recurse=False):
            row = row_for(rows, torch_param_path(module_name, m, name))
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
    t = trial_of(cfg)
    text = lr_comment(cfg) + (
        f"LEARNING_RATE = {literal(t['train.learning_rate'])}  # train.learning_rate\n"
    )
    if decay:
        text += (
            f"WEIGHT_DECAY = {literal(t['train.weight_decay'])}  # train.weight_decay: L2, added "
            "to the gradient\n"
        )
    return text


def _rates_source(cfg) -> str:
    """The constants and the table every per-parameter optimizer snippet starts from."""
    t = trial_of(cfg)
    rows = "".join(f"    ({json.dumps(r.glob)}, {literal(r.lr)}, {literal(r.decay)}),\n"
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
    t = trial_of(cfg)
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
    o = FRAMEWORK_OPTIMIZERS[t["train.optimizer"]]
    momentum = f", momentum={literal(t['train.momentum'])}" if o.momentum else ""
    return f"optax.{o.optax}(learning_rate={rate}{momentum})"


def _warmup_source(warmup: int, name: str, peak: str, indent: str = "") -> str:
    """train.warmup_steps as an optax schedule ``name`` of ``peak`` (update k uses
    min(1, (k+1) / warmup_steps) of it: ``pipeline.core.train.warmup_factor``)."""
    return (
        f"{indent}# train.warmup_steps={warmup}: update k uses min(1, (k + 1) / {warmup}) of it\n"
        f"{indent}{name} = lambda count: {peak} * jnp.minimum(1.0, (count + 1) / {warmup})\n"
    )


def _optax_source(cfg, per_parameter: bool) -> str:
    t = trial_of(cfg)
    warmup, clip, decay = t["train.warmup_steps"], t["train.clip_norm"], t["train.weight_decay"]
    numpy = "import jax.numpy as jnp\n" if warmup else ""
    clip_line = (
        "" if clip is None else f"optax.clip_by_global_norm({literal(clip)}),  # train.clip_norm\n"
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
    t = trial_of(cfg)
    kind, warmup, clip = t["train.optimizer"], t["train.warmup_steps"], t["train.clip_norm"]
    decay = t["train.weight_decay"]
    params = "param_groups(model)" if per_parameter else "model.parameters()"
    o = FRAMEWORK_OPTIMIZERS[kind]
    extra = ""
    if o.momentum:
        extra += f", momentum={literal(t['train.momentum'])}"  # train.momentum
    if decay and not per_parameter:  # a group's own weight_decay otherwise
        extra += ", weight_decay=WEIGHT_DECAY"
    make = f"torch.optim.{o.torch}({params}, lr=LEARNING_RATE{extra})"
    use, steps = ["optimizer = make_optimizer(model)"], ["optimizer.step()"]
    if clip is not None:
        steps.insert(0, f"torch.nn.utils.clip_grad_norm_(model.parameters(), {literal(clip)})")
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
    norms = "".join(f"    torch.nn.{n},\n" for n in TORCH_NORMS)
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
    t = trial_of(cfg)
    kind, warmup, clip = t["train.optimizer"], t["train.warmup_steps"], t["train.clip_norm"]
    decay = t["train.weight_decay"]
    rate = "Warmup()" if warmup else "LEARNING_RATE"
    o = FRAMEWORK_OPTIMIZERS[kind]
    args = [f"learning_rate={rate}"]
    if o.momentum:
        args.append(f"momentum={literal(t['train.momentum'])}")
    if o.keras_epsilon:
        args.append(f"epsilon={o.keras_epsilon}")  # optax's
    if clip is not None:
        args.append(f"global_clipnorm={literal(clip)}")
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
    code += f"optimizer = keras.optimizers.{o.keras}({', '.join(args)})\n"
    if decay:
        code += (
            "# train.weight_decay: L2 added to the gradient, d/dw of WEIGHT_DECAY / 2 * w^2:\n"
            "regularizer = keras.regularizers.L2(WEIGHT_DECAY / 2)\n"
            "# keras.layers.Dense(units, ..., kernel_regularizer=regularizer, "
            "bias_regularizer=regularizer)\n"
        )
    return code
