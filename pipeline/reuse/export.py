"""Best configurations translated to Flax, Keras and PyTorch (the files: ``pipeline.reuse.best``).

Translation: each framework gets one small mapping from our initializer to a call of its own API
(``flax_kernel``, ``keras_kernel``, ``torch_kernel``). The same :class:`Call` both builds the
object (``to_flax``, ``to_keras``, ``to_torch``) and prints it as code (``snippet``), so the
snippet ``best --format`` prints is exactly what the Python API returns. Keras and PyTorch are
imported only when an object is built; printing a snippet needs neither.

Every initializer here is a "variance scaling" one (std or limit = sqrt(factor * gain^2 / fan),
Glorot & Bengio 2010; He et al. 2015; LeCun et al. 1998; the factors are the core's,
``pipeline.core.initializers.VARIANCE_SCALING``), an orthogonal one (Saxe et al. 2013) or an
absolute one (fixed std, limit or value), and all three frameworks implement each of these with
the same fan convention as ours: fan_in = in_features * receptive field, fan_out = out_features *
receptive field. ``tests/unit/test_export.py`` checks mean, variance, fan mode and distribution
shape for every initializer of the registry.

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

This module is the public face; each concern is a module of its own under ``pipeline.reuse``:
``resolve`` (what an entry initializes, framework-free: ``init_spec``), ``calls`` (``Call`` and
what the frameworks share), ``export_flax``, ``export_keras``, ``export_torch``, ``rates`` (the
per-parameter rate table), ``optimizers`` (the optimizer built and printed) and ``snippets``.
"""

from pipeline.reuse.best import read_best
from pipeline.reuse.calls import ABSOLUTE, EXPORTABLE, FORMATS, VARIANCE_SCALING, Call
from pipeline.reuse.export_flax import flax_bias, flax_kernel, to_flax
from pipeline.reuse.export_keras import keras_bias, keras_kernel, to_keras
from pipeline.reuse.export_torch import (
    TORCH_BIAS,
    TORCH_NONLINEARITY,
    to_torch,
    torch_bias,
    torch_kernel,
    torch_layers,
    torch_per_fan_in,
)
from pipeline.reuse.optimizers import (
    FRAMEWORK_OPTIMIZERS,
    lr_comment,
    optax_for,
    optimizer_code,
    torch_param_groups,
    torch_param_path,
)
from pipeline.reuse.rates import LeafRate, lr_multipliers, rate_table
from pipeline.reuse.resolve import (
    InitSpec,
    hidden_fan_in,
    init_spec,
    parametrization_rules,
    rule_layers,
    torch_path,
)
from pipeline.reuse.snippets import parametrization_note, residual_note, snippet

__all__ = [
    "ABSOLUTE",
    "EXPORTABLE",
    "FORMATS",
    "FRAMEWORK_OPTIMIZERS",
    "TORCH_BIAS",
    "TORCH_NONLINEARITY",
    "VARIANCE_SCALING",
    "Call",
    "InitSpec",
    "LeafRate",
    "flax_bias",
    "flax_kernel",
    "hidden_fan_in",
    "init_spec",
    "keras_bias",
    "keras_kernel",
    "lr_comment",
    "lr_multipliers",
    "optax_for",
    "optimizer_code",
    "parametrization_note",
    "parametrization_rules",
    "rate_table",
    "read_best",
    "residual_note",
    "rule_layers",
    "snippet",
    "to_flax",
    "to_keras",
    "to_torch",
    "torch_bias",
    "torch_kernel",
    "torch_layers",
    "torch_param_groups",
    "torch_param_path",
    "torch_path",
    "torch_per_fan_in",
]
