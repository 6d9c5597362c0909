"""Ready-to-paste code for a best configuration (``make best FORMAT=flax|keras|torch``): the
initializers as ``to_<framework>`` builds them, the notes of what no initializer sets (the
residual block's alpha and skip, a transformer's tables and logit scale, init.parametrization's
multipliers), then the optimizer (``pipeline.reuse.optimizers.optimizer_code``)."""

from __future__ import annotations

import json
import math
import re

from pipeline.core.model import GATED
from pipeline.reuse.calls import FORMATS, literal, torch_bias_limit
from pipeline.reuse.export_flax import flax_bias, flax_kernel
from pipeline.reuse.export_keras import keras_bias, keras_kernel
from pipeline.reuse.export_torch import TORCH_BIAS, torch_bias, torch_kernel, torch_per_fan_in
from pipeline.reuse.optimizers import FRAMEWORK_OPTIMIZERS, optimizer_code
from pipeline.reuse.rates import rate_table
from pipeline.reuse.resolve import (
    InitSpec,
    hidden_fan_in,
    init_spec,
    rule_layers,
    sections,
    trial_of,
)


def parametrization_note(cfg, framework: str) -> str:
    """What ``init.parametrization`` sets that no initializer can, as comments: the read-out's
    std (in the initializers), depth_mup's branch multiplier and muP's attention scale (forward
    pass); for Keras also the per-layer learning-rate and weight-decay multipliers, which the
    Flax and PyTorch snippets give as optimizer code instead (``optimizer_code``)."""
    init, model, _ = sections(cfg)
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
        optimizer = FRAMEWORK_OPTIMIZERS[trial_of(cfg)["train.optimizer"]].keras
        lines.append(
            f"#   learning rate per parameter ({optimizer}; not generated for "
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
        kernel = flax_kernel(s)
        calls = [kernel, flax_bias(s, fan_in)]
        calls += [c for _, r in specs for c in (flax_kernel(r), flax_bias(r, fan_in))]
        partial = any(c.partial for c in calls)
        imports = "import functools\n\nimport jax\n" if partial else "import jax\n"
        text = (
            f"{head}{'import fnmatch' + chr(10) + chr(10) if specs else ''}{imports}\n"
            f"kernel_init = {kernel.source()}\n"
            f"{_bias_note(s, fan_in, 'to_flax')}bias_init = {flax_bias(s, fan_in).source()}\n"
        )
        if not specs:
            return text + (
                "# nnx.Linear(n_in, n_out, kernel_init=kernel_init, bias_init=bias_init, "
                "rngs=rngs)\n"
            )
        rows = "".join(
            f"    ({json.dumps(layer)}, {flax_kernel(r).source()}, "
            f"{flax_bias(r, fan_in).source()}),\n"
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
            f"kernel_initializer = {keras_kernel(s).source()}\n"
            f"{_bias_note(s, fan_in, 'to_keras')}"
            f"bias_initializer = {keras_bias(s, fan_in).source()}\n"
        )
        if not specs:
            return text + (
                "# keras.layers.Dense(units, kernel_initializer=kernel_initializer, "
                "bias_initializer=bias_initializer)\n"
            )
        rows = "".join(
            f"    ({json.dumps(layer)}, {keras_kernel(r).source()}, "
            f"{keras_bias(r, fan_in).source()}),\n"
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
    init, model, _ = sections(cfg)
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
    if torch_bias_limit(s, fan_in) is None:
        return ""
    return (
        f"# PyTorch's default bias U(+-1/sqrt(fan_in)) for fan_in = {fan_in:g} (a hidden layer); "
        f"other layers: {build}(cfg, fan_in=...)\n"
    )


def _torch_lines(s: InitSpec, indent: str) -> str:
    """The statements that initialize ``m`` as ``s`` says."""
    kernel, multiplier = torch_kernel(s)
    lines = [kernel.source("m.weight")]
    per_fan_in = torch_per_fan_in(s)
    if per_fan_in is not None:
        lines.append(f"m.weight.mul_({literal(per_fan_in)} / math.sqrt(m.weight[0].numel()))")
    if multiplier != 1.0:
        lines.append(f"m.weight.mul_({literal(multiplier)})")
    lines.append("if m.bias is not None:")
    bias = torch_bias(s)
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
