"""The names of the core's registries, without JAX or Flax.

The config schema checks values against these (so ``import pipeline.config`` and a mistyped
key's one-line error import no JAX); each registry (``activations.ACTIVATIONS``,
``initializers.INITIALIZERS``) holds the names of its tuple here and refuses at import to differ
from it.
A new activation or initializer is its name here plus its entry in the registry.
"""

from __future__ import annotations

from collections.abc import Mapping

ACTIVATION_NAMES = (
    "identity",
    "relu",
    "leaky_relu",
    "elu",
    "selu",
    "gelu",
    "silu",
    "swish",
    "tanh",
    "sigmoid",
)
INITIALIZER_NAMES = (
    "zeros",
    "constant",
    "normal",
    "truncated_normal",
    "uniform",
    "glorot_normal",
    "xavier_normal",
    "glorot_uniform",
    "xavier_uniform",
    "he_normal",
    "kaiming_normal",
    "he_uniform",
    "kaiming_uniform",
    "lecun_normal",
    "lecun_uniform",
    "orthogonal",
    "delta_orthogonal",
    "lsuv",
    "torch_default",
    "flax_default",
    "keras_default",
)
FRAMEWORK_DEFAULTS = ("torch_default", "flax_default", "keras_default")
BIAS_INITS = ("zeros", "constant", "normal", "torch_default", "auto")
FAN_MODES = ("fan_in", "fan_out")

KINDS = ("mlp", "cnn", "resmlp", "transformer", "custom")  # custom: a user's module
BUILTIN_KINDS = ("mlp", "cnn", "resmlp", "transformer")
RESIDUAL_KINDS = ("resmlp", "transformer")  # model.norm and init.residual shape their blocks
ATTENTION_SCALES = ("1/sqrt(d)", "1/d", "none")  # the transformer's model.attention_scale
# Each optimizer (train.optimizer) and the copies of the parameters its state holds: momentum's
# trace, Adam's first and second moments. The memory estimate reads the copies; the core's
# make_optimizer and the exports' optimizer code hold one entry per name.
OPTIMIZER_STATE_COPIES = {"sgd": 0, "momentum": 1, "adam": 2}
OPTIMIZERS = tuple(OPTIMIZER_STATE_COPIES)


def check_registry(entries: Mapping[str, object], names: tuple[str, ...]) -> None:
    """Refuse a registry that does not hold exactly ``names``, in their order (the schema's error
    messages list them so)."""
    if tuple(entries) != names:
        raise ImportError(
            f"a registry differs from pipeline.core.names: {sorted(set(names) ^ set(entries))} "
            "are in only one of them, or the order differs"
        )
