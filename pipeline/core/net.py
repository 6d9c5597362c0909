"""The model interface: any Flax module (linen or NNX) as the engine sees it.

A ``Net`` is a module reduced to what the engine needs: the ``Layout`` of its parameter tree (one
``Leaf`` per parameter: its path, shape, role and fans), a pure ``apply`` and, for leaves the
engine does not initialize itself, the module's own initial values. Every model kind goes through
it: the built-in ``mlp`` and ``cnn`` (``MODELS``) and a user's module (``model.kind=custom``).

How a leaf is initialized follows from the module that owns it:

- a ``kernel`` of a dense, convolution or general-dense layer is drawn by the trial's weight
  initializer, with fans from its shape (dense: in, out; convolution: receptive field x channels;
  a general dense layer's kernel is flattened to (inputs, outputs) first, as Flax does);
- a ``bias`` of such a layer (or of a module the engine does not know) gets the bias rule;
- everything else (normalization scales and offsets, embeddings, learnable scalars) keeps the
  module's own initializer; ``init.rules`` can still scale it.

A leaf with more axes than its layer creates is a stack of layers (``nn.scan``, ``nnx.vmap``):
the leading axes index the layers, each layer gets its own draw, and fans come from one layer.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx
from jax.extend.core import Literal

from pipeline.core.model import MLP, ResMLP, Structure
from pipeline.core.transformer import Transformer

KERNEL, BIAS, OTHER = "kernel", "bias", "other"

_NORMS = (
    nn.LayerNorm, nn.RMSNorm, nn.BatchNorm, nn.GroupNorm,
    nnx.LayerNorm, nnx.RMSNorm, nnx.BatchNorm, nnx.GroupNorm,
)  # fmt: skip
_DENSE = (nn.Dense, nnx.Linear)
_CONV = (nn.Conv, nn.ConvTranspose, nnx.Conv, nnx.ConvTranspose)
_EMBED = (nn.Embed, nnx.Embed)
# The layers whose outputs ``Net.capture`` records: those whose kernel shape the engine knows.
_LAYERS = _DENSE + _CONV + (nn.DenseGeneral, nnx.LinearGeneral)


class Leaf(NamedTuple):
    """One parameter of a module, as the engine initializes it."""

    path: str  # "hidden/dense/kernel": the module path and the parameter's name
    shape: tuple[int, ...]  # the whole array, stacked layer axes first
    role: str  # kernel | bias | other
    stack: int  # leading axes that index layers (0: one layer)
    fan_shape: tuple[int, ...]  # one layer's kernel as its fans are computed (kernels only)
    module: str  # the owning module's class name

    @property
    def layers(self) -> int:
        return math.prod(self.shape[: self.stack])

    @property
    def layer_shape(self) -> tuple[int, ...]:
        return self.shape[self.stack :]

    @property
    def tag(self) -> int:
        """A number from the path alone: the leaf's random key is ``fold_in(seed key, tag)``,
        so a leaf's draw does not depend on which other leaves the module has."""
        return zlib.crc32(self.path.encode()) & 0x7FFFFFFF


class Layout(NamedTuple):
    """The parameter leaves of one structure, in the order the module first calls their layers
    (for a sequential network: input layer first)."""

    leaves: tuple[Leaf, ...]

    def of(self, role: str) -> tuple[Leaf, ...]:
        return tuple(leaf for leaf in self.leaves if leaf.role == role)

    @property
    def kernels(self) -> tuple[Leaf, ...]:
        return self.of(KERNEL)

    @property
    def biases(self) -> tuple[Leaf, ...]:
        return self.of(BIAS)

    @property
    def others(self) -> tuple[Leaf, ...]:
        return self.of(OTHER)

    @property
    def n_params(self) -> int:
        return sum(math.prod(leaf.shape) for leaf in self.leaves)


def _kernel_rank(module: Any, shape: tuple[int, ...]) -> tuple[int, int]:
    """(axes of one layer's kernel, of which inputs) for the layer types whose shape is known;
    an unknown owner: the whole array is one kernel, inputs all but the last axis."""
    if isinstance(module, _DENSE):
        return 2, 1
    if isinstance(module, _CONV):
        return len(module.kernel_size) + 2, len(module.kernel_size) + 1
    if isinstance(module, nn.DenseGeneral):
        axis, features = module.axis, module.features
        n_in = len(axis) if isinstance(axis, tuple | list) else 1
        n_out = len(features) if isinstance(features, tuple | list) else 1
        return n_in + n_out, n_in
    if isinstance(module, nnx.LinearGeneral):
        n_in = len(module.in_features) if isinstance(module.in_features, tuple) else 1
        n_out = len(module.out_features) if isinstance(module.out_features, tuple) else 1
        return n_in + n_out, n_in
    return len(shape), len(shape) - 1


def make_leaf(path: str, shape: tuple[int, ...], module: Any) -> Leaf:
    """The leaf of parameter ``path`` of ``shape``, owned by ``module`` (None: unknown)."""
    name = path.rsplit("/", 1)[-1]
    kind = type(module).__name__ if module is not None else "?"
    if isinstance(module, _NORMS + _EMBED):
        return Leaf(path, shape, OTHER, 0, (), kind)
    if name == "kernel" and len(shape) >= 2:
        rank, n_in = _kernel_rank(module, shape)
        stack = max(0, len(shape) - rank)
        layer = shape[stack:]
        fan_shape = layer
        if isinstance(module, nn.DenseGeneral | nnx.LinearGeneral):
            fan_shape = (math.prod(layer[:n_in]), math.prod(layer[n_in:]))
        return Leaf(path, shape, KERNEL, stack, tuple(fan_shape), kind)
    if name == "bias":
        return Leaf(path, shape, BIAS, max(0, len(shape) - 1), (), kind)
    return Leaf(path, shape, OTHER, 0, (), kind)


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """A nested parameter dict as ``{"a/b/kernel": array}`` (insertion order kept)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, path + "/"))
        else:
            out[path] = v
    return out


def unflatten(flat: dict[str, Any]) -> dict:
    """``flatten``'s inverse."""
    tree: dict = {}
    for path, v in flat.items():
        *parents, name = path.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[name] = v
    return tree


def kernel_norms(params: dict, layout: Layout) -> jax.Array:
    """Frobenius norm of each layer's kernel (or its gradient), in layout order (for a
    sequential network: input layer first); a stacked leaf gives one norm per layer."""
    flat = flatten(params)
    parts = []
    for leaf in layout.kernels:
        a = flat[leaf.path].reshape(leaf.layers, -1)
        parts.append(jnp.sqrt(jnp.sum(a * a, axis=1)))
    return jnp.concatenate(parts)


def _ordered(paths: dict[str, tuple], owners: dict[str, Any], order: list[str]) -> Layout:
    """Leaves sorted by the call order of their owning module (``order``: module paths)."""
    rank = {m: i for i, m in enumerate(order)}

    def owner(path: str) -> str:
        return path.rsplit("/", 1)[0] if "/" in path else ""

    leaves = [make_leaf(p, s, owners.get(owner(p))) for p, s in paths.items()]
    leaves.sort(key=lambda leaf: rank.get(owner(leaf.path), len(rank)))
    return Layout(tuple(leaves))


class Net(NamedTuple):
    """A module as the engine trains it.

    ``apply(params, x, hp, key)`` gives logits; ``key`` is given in training (None in
    evaluation), ``hp`` is the row's ``Hparams`` (the built-in MLP reads its traced depth, slope
    and dropout from it). ``own(key)`` gives the module's own initial parameters (for the
    ``other`` leaves; None when there are none). ``builtin`` is the built-in module, whose
    layer-by-layer diagnostics (and, for the MLP, LSUV) the engine can run. ``capture(params,
    x)`` (a user's module) gives ``(logits, {module path: (output, ...)})``: the output of each
    dense and convolution layer (each call's), in evaluation mode, the module unchanged.
    """

    layout: Layout
    apply: Callable
    own: Callable | None
    builtin: nn.Module | None = None  # MLP, ResMLP or Transformer
    needs_key: bool = False  # training always passes a random key (a user's dropout)
    capture: Callable | None = None


def forward_constants(hp) -> dict:
    """The per-row forward constants a built-in module takes besides depth, slope and dropout:
    a residual network's ``residual``, a transformer's ``attention_scale``, a merged
    structure's ``activation_index``."""
    extra = {} if hp.residual is None else {"residual": hp.residual}
    if getattr(hp, "attention_scale", None) is not None:
        extra["attention_scale"] = hp.attention_scale
    if getattr(hp, "activation", None) is not None:  # a merged structure's (activations.py)
        extra["activation_index"] = hp.activation
    return extra


def input_dtype(structure: Structure):
    """A transformer reads token ids; every other built-in model float features."""
    return jnp.int32 if structure.vocab else jnp.float32


def model_class(structure: Structure) -> type[nn.Module]:
    """The built-in module of ``structure.kind`` (the transformer builds on the model's pieces,
    so this choice lives above both)."""
    if structure.kind == "transformer":
        return Transformer
    return ResMLP if structure.kind == "resmlp" else MLP


def builtin_net(structure: Structure, unroll: int = 1) -> Net:
    """The built-in MLP, CNN, residual MLP or transformer of ``structure`` through the model
    interface (residual networks also read their row's forward constants, ``forward_constants``)."""
    model = model_class(structure)(structure, unroll=unroll)
    x = jnp.zeros((1, structure.n_in), input_dtype(structure))

    def apply(params, x, hp, key=None):
        slope = hp.values["model.negative_slope"]
        extra = forward_constants(hp)
        if key is None:
            return model.apply({"params": params}, x, hp.depth, slope, **extra)
        rate = hp.values["model.dropout"]
        rngs = {"dropout": key}
        return model.apply({"params": params}, x, hp.depth, slope, rate, rngs=rngs, **extra)

    def own(key):  # norm scales and offsets, the blocks' gates, embedding tables (N(0, 1))
        return model.init({"params": key}, x, structure.n_hidden, 0.0)["params"]

    layout = linen_layout(model, x, (structure.n_hidden, 0.0))
    return Net(layout, apply, own if layout.others else None, builtin=model)


def linen_layout(module: nn.Module, x: jax.Array, args: tuple = (), kwargs=None) -> Layout:
    """The layout of a linen module called as ``module(x, *args, **kwargs)``: shapes from
    ``jax.eval_shape`` (nothing is computed), owners and call order from an interceptor."""
    owners: dict[str, Any] = {}
    order: list[str] = []

    def record(next_fun, a, k, context):
        if context.method_name == "__call__":
            path = "/".join(context.module.path)
            if path not in owners:
                owners[path] = context.module
                order.append(path)
        return next_fun(*a, **k)

    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    with nn.intercept_methods(record):
        variables = jax.eval_shape(lambda: module.init(rngs, x, *args, **(kwargs or {})))
    params = variables.get("params", {})
    shapes = {p: tuple(a.shape) for p, a in flatten(params).items()}
    return _ordered(shapes, owners, order)


def by_first_use(layout: Layout, apply: Callable, x: jax.Array) -> Layout:
    """``layout`` reordered by the order in which ``apply`` first reads each leaf (from its
    jaxpr: nothing is computed), so that for a sequential network the input layer comes first
    whatever the names; leaves read by one operation (a scanned stack) keep their order."""
    paths = [leaf.path for leaf in layout.leaves]

    def f(*leaves):
        return apply(unflatten(dict(zip(paths, leaves))), x, None)

    args = [jax.ShapeDtypeStruct(leaf.shape, jnp.float32) for leaf in layout.leaves]
    jaxpr = jax.make_jaxpr(f)(*args).jaxpr
    first = {v: len(jaxpr.eqns) for v in jaxpr.invars}
    for i, eqn in enumerate(jaxpr.eqns):
        for v in eqn.invars:
            if not isinstance(v, Literal) and v in first and first[v] > i:
                first[v] = i
    rank = [first[v] for v in jaxpr.invars]
    order = sorted(range(len(paths)), key=lambda i: rank[i])
    return Layout(tuple(layout.leaves[i] for i in order))


def linen_net(module: nn.Module, x: jax.Array) -> Net:
    """A user's linen module, called ``module(x, train=...)``."""
    layout = linen_layout(module, x, kwargs={"train": False})

    def apply(params, x, hp, key=None):
        if key is None:
            return module.apply({"params": params}, x, train=False)
        return module.apply({"params": params}, x, train=True, rngs={"dropout": key})

    def own(key):
        rngs = {"params": key, "dropout": key}
        return module.init(rngs, x[:1], train=False)["params"]

    def capture(params, x):  # Flax's interceptor sows each layer's output (linen.Module.apply)
        def chosen(module, method):
            return method == "__call__" and isinstance(module, _LAYERS)

        logits, state = module.apply(
            {"params": params}, x, train=False, capture_intermediates=chosen,
            mutable=["intermediates"],
        )  # fmt: skip
        return logits, _call_outputs(state.get("intermediates", {}))

    layout = by_first_use(layout, apply, x)
    return Net(layout, apply, own if layout.others else None, needs_key=True, capture=capture)


def _call_outputs(sown: dict) -> dict[str, tuple]:
    """``{"a/b": (output, ...)}`` from Flax's ``{"a": {"b": {"__call__": (output, ...)}}}``:
    what each module's ``__call__`` returned, once per call."""
    out = {}
    for path, v in flatten(sown).items():
        module, _, method = path.rpartition("/")
        if method == "__call__":
            out[module] = v
    return out


def nnx_net(module: nnx.Module, x: jax.Array) -> Net:
    """A user's NNX module, called ``module(x, train=...)``; its parameters are the ``nnx.Param``
    variables, its other state (random streams) is carried along unchanged."""
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)
    values = nnx.to_pure_dict(params)
    owners, order = {}, []
    for path, sub in nnx.iter_modules(module):
        name = "/".join(str(p) for p in path)
        owners[name] = sub
        order.append(name)
    shapes = {p: tuple(a.shape) for p, a in flatten(values).items()}
    layout = _ordered(shapes, owners, order)

    def merged(p):  # a fresh module holding the parameters ``p``
        state = jax.tree.map(lambda a: a, params)
        nnx.replace_by_pure_dict(state, p)
        return nnx.merge(graphdef, state, jax.tree.map(lambda a: a, rest))

    def apply(p, x, hp, key=None):
        module = merged(p)
        if key is not None:  # training: the module's dropout stream starts from this step's key
            nnx.reseed(module, dropout=key)
        return module(x, train=key is not None)

    def own(key):  # an NNX module is built initialized: its values, whatever the key
        return values

    def capture(p, x):  # nnx.capture sows the outputs of every module's methods: keep the layers'
        module = merged(p)
        layers = {"/".join(map(str, path)) for path, m in nnx.iter_modules(module)
                  if isinstance(m, _LAYERS)}  # fmt: skip
        logits, state = nnx.capture(module, nnx.Intermediate, method_outputs=nnx.Intermediate)(
            x, train=False
        )
        found = _call_outputs(nnx.to_pure_dict(state))
        return logits, {path: v for path, v in found.items() if path in layers}

    layout = by_first_use(layout, apply, x)
    return Net(layout, apply, own if layout.others else None, needs_key=True, capture=capture)


def as_net(module: Any, x: jax.Array) -> Net:
    """Any Flax module (linen or NNX) as a ``Net``; ``x``: an input batch of the data."""
    if isinstance(module, nnx.Module):
        return nnx_net(module, x)
    if isinstance(module, nn.Module):
        return linen_net(module, x)
    raise TypeError(f"expected a Flax linen or NNX module, got {type(module).__name__}")
