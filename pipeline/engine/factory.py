"""Networks by structure: the built-in entries of the model registry and a user's factory.

``model.kind=custom model.factory=<module>:<function>``: the module is imported as Python would
from the current folder and ``PYTHONPATH``, and the function is called with the structural values
it names among ``FACTORY_ARGS`` (``depth``, ``width``, ``activation``, ``n_features``,
``n_classes``, and ``n_outputs``: the same number, the name a regression's module would use).
It returns a Flax module (linen or NNX) whose ``__call__(x, train: bool)`` gives logits of shape
``(batch, n_classes)``, or a regression's outputs ``(batch, n_outputs)``. Every way this can go
wrong is one ``ConfigError`` line.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from pipeline.config import ConfigError
from pipeline.core.model import BUILTIN_KINDS, Structure
from pipeline.core.net import Net, as_net, builtin_net

FACTORY_ARGS = ("depth", "width", "activation", "n_features", "n_classes", "n_outputs")


def factory_args(structure: Structure) -> dict[str, Any]:
    s = structure  # n_outputs: the same number by the name a regression's module would use
    return dict(
        depth=s.n_hidden, width=s.width, activation=s.activation, n_features=s.n_in,
        n_classes=s.n_classes, n_outputs=s.n_classes,
    )  # fmt: skip


def load_factory(spec: str) -> Callable:
    return load_function(spec, "model.factory")


def load_function(spec: str, key: str) -> Callable:
    """The function ``spec`` (``<module>:<function>``, the value of config ``key``) names, or a
    one-line ``ConfigError``."""
    where = f"{key}={spec}"
    module_name, _, name = spec.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does: the current folder first
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ConfigError(
            f"{where}: cannot import {module_name!r} ({e}); the module is found from the "
            "current folder and PYTHONPATH"
        ) from None
    except Exception as e:  # the user's module failed while importing
        raise ConfigError(f"{where}: importing {module_name!r} raised {said(e)}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ConfigError(f"{where}: {module_name!r} has no function {name!r}")
    return fn


def said(e: BaseException) -> str:
    """An exception in a few words: its type and the first line of its message."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


@functools.cache
def factory_takes(spec: str) -> tuple[str, ...]:
    """The structural values the factory names (all of ``FACTORY_ARGS`` for ``**kwargs``): the
    others do not change its module, so trials that differ only in them share an executable."""
    try:
        params = inspect.signature(load_factory(spec)).parameters
    except (TypeError, ValueError):
        return ()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return FACTORY_ARGS
    return tuple(a for a in FACTORY_ARGS if a in params)


def build_module(spec: str, structure: Structure) -> Any:
    """Call the factory with the structural values it names; check it returned a Flax module."""
    fn = load_factory(spec)
    where = f"model.factory={spec}"
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}
    for p in params.values():
        needed = p.default is inspect.Parameter.empty and p.kind in (
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.KEYWORD_ONLY,
        )
        if needed and p.name not in FACTORY_ARGS:
            raise ConfigError(
                f"{where}: its parameter {p.name!r} has no default and is not one the engine "
                f"passes ({', '.join(FACTORY_ARGS)})"
            )
    args = factory_args(structure)
    kwargs = {k: v for k, v in args.items() if k in factory_takes(spec)}
    try:
        module = fn(**kwargs)
    except Exception as e:
        raise ConfigError(f"{where} raised {said(e)} when called with {kwargs}") from None
    from flax import linen, nnx

    if not isinstance(module, linen.Module | nnx.Module):
        raise ConfigError(
            f"{where} returned {type(module).__name__}, not a Flax module (flax.linen.Module or "
            "flax.nnx.Module)"
        )
    return module


def custom_net(spec: str, structure: Structure) -> Net:
    """A user's module as a ``Net``, checked: it initializes, keeps only ``params`` (no batch
    statistics yet), and gives ``(batch, n_classes)`` logits."""
    where = f"model.factory={spec}"
    module = build_module(spec, structure)
    x = jnp.zeros((2, structure.n_in), jnp.float32)
    try:
        net = as_net(module, x)
        from flax import linen

        if isinstance(module, linen.Module):
            variables = jax.eval_shape(
                lambda: module.init(
                    {"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, train=False
                )
            )
            extra = sorted(set(variables) - {"params"})
            if extra:
                raise ConfigError(
                    f"{where}: the module keeps variable collections {extra}; only 'params' is "
                    "supported (use LayerNorm or RMSNorm instead of BatchNorm)"
                )
        out = jax.eval_shape(lambda: net.apply(_params_like(net), x, None))
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(
            f"{where}: calling the module as module(x, train=False) on a batch of shape "
            f"{tuple(x.shape)} raised {said(e)}"
        ) from None
    expected = (2, structure.n_classes)
    if tuple(getattr(out, "shape", ())) != expected:
        got = getattr(out, "shape", None)
        got = tuple(got) if got is not None else type(out).__name__
        raise ConfigError(
            f"{where}: the module gives output of shape {got} "
            f"for a batch of shape {tuple(x.shape)}; expected logits of shape {expected} "
            f"(n_classes = n_outputs = {structure.n_classes}: classes, or regression targets)"
        )
    if not net.layout.kernels:
        raise ConfigError(f"{where}: the module has no kernel to initialize")
    return net


def _params_like(net: Net) -> dict:
    from pipeline.core.net import unflatten

    return unflatten({leaf.path: jnp.zeros(leaf.shape) for leaf in net.layout.leaves})


@functools.cache
def net_for(structure: Structure, unroll: int = 1) -> Net:
    """The ``Net`` of one structure (built once per process and structure)."""
    if structure.kind in BUILTIN_KINDS:
        return builtin_net(structure, unroll)
    if not structure.factory:
        raise ConfigError("model.kind=custom needs model.factory=<module>:<function>")
    return custom_net(structure.factory, structure)


def check_model(cfg, space, n_features: int, n_classes: int) -> None:
    """Build the network of the config's base structure (a user's factory is imported and
    called here, so each of its errors is one line before anything is written) and refuse a
    rule whose glob matches none of its parameters (a typo would silently do nothing)."""
    from pipeline.core.data import token_vocab
    from pipeline.core.rules import unmatched

    m = cfg.model
    kind = m.kind
    structure = Structure(
        m.activation, m.depth, m.width, n_features, n_classes, kind,
        m.factory if kind not in BUILTIN_KINDS else None, m.norm,
        m.heads if kind == "transformer" else 1, token_vocab(cfg.data),
    )  # fmt: skip
    paths = [leaf.path for leaf in net_for(structure, cfg.engine.unroll).layout.leaves]
    from pipeline.engine.plan import rule_sets

    for rules in rule_sets(cfg, space):
        missing = unmatched(rules, paths)
        if missing:
            shown = ", ".join(paths[:12]) + (", ..." if len(paths) > 12 else "")
            raise ConfigError(
                f"init.rules: match {missing[0]!r} matches no parameter of model.kind={kind} "
                f"(its parameters: {shown})"
            )
