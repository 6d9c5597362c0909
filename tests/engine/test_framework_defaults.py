"""At gain 1, each framework-default arm draws exactly its framework's layer initialization
(weights and bias), checked against real, untouched PyTorch / Flax / Keras layers.

``torch_default``, ``flax_default`` and ``keras_default`` with ``init.bias=auto`` are drawn the
way the engine draws them (``make_unit_draws``, ``row_hparams``, ``init_params``, rows of many
seeds) on a built-in MLP whose layers are all fan_in 64 (fan_out 64, and 8 for the read-out).
Each kernel and bias is compared with freshly built framework layers of the same (fan_in,
fan_out), as many of each shape as the engine drew, pooled: a two-sample Kolmogorov-Smirnov test
(>= 20k values a side; a true null gives a uniform p, so p > 1e-3 fails one time in a thousand
by chance, and the keys here are fixed) and the support (never beyond the framework's limit, and
reaching it). The negative control shows the KS test discriminates at these sizes: the old
engine's bias, a normal of PyTorch's std, is rejected against torch's uniform bias (p < 1e-6).
"""

import functools
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY
from scipy.stats import ks_2samp

from pipeline.config import TrialSpec, load_config
from pipeline.core.initializers import (
    FRAMEWORK_DEFAULTS,
    TRUNCATED_NORMAL_STD,
    bias_draw,
    make_bias_initializer,
    resolve_gain,
    torch_bias_std,
)
from pipeline.core.model import Structure
from pipeline.core.net import as_net, builtin_net, flatten
from pipeline.core.train import init_params
from pipeline.core.unit_draws import make_unit_draws
from pipeline.engine import draws_for
from pipeline.engine.rows import bias_fan_ins, row_hparams, stack_rows

os.environ.setdefault("KERAS_BACKEND", "jax")

WIDTH = 64
STRUCTURE = Structure("relu", 3, WIDTH, WIDTH, 8)  # every fan_in 64; fan_out 64 and 8
SEEDS = 128  # biases: 128 x (3 x 64 + 8) = 25,600 values
KERNEL_SEEDS = 4  # kernels: 4 x (3 x 4096 + 512) = 51,200 values
DRAWS = draws_for(FRAMEWORK_DEFAULTS)
P_SAME = 1e-3  # a KS p-value below this rejects "the same distribution"
P_DIFFERENT = 1e-6  # the negative control must fall below this
FRAMEWORK = {"torch_default": "torch", "flax_default": "flax", "keras_default": "keras"}

# The framework's own limit of a kernel of (fan_in, fan_out): torch kaiming_uniform_(a=sqrt(5))
# bound sqrt(6 / ((1 + 5) fan_in)); Flax lecun_normal, a normal of std sqrt(1 / fan_in) / 0.8796
# truncated at 2 std; Keras GlorotUniform sqrt(6 / (fan_in + fan_out)).
KERNEL_LIMIT = {
    "torch_default": lambda fan_in, fan_out: 1.0 / math.sqrt(fan_in),
    "flax_default": lambda fan_in, fan_out: 2.0 / math.sqrt(fan_in) / TRUNCATED_NORMAL_STD,
    "keras_default": lambda fan_in, fan_out: math.sqrt(6.0 / (fan_in + fan_out)),
}


def trial(weights: str, gain="1", bias: str = "auto", activation: str = "relu") -> TrialSpec:
    return TrialSpec.of_config(
        load_config(
            [
                *TINY,
                f"data.features={WIDTH}",
                f"model.width={WIDTH}",
                "model.depth=3",
                f"model.activation={activation}",
                f"init.weights={weights}",
                f"init.gain={gain}",
                f"init.bias={bias}",
            ]
        )
    )


@functools.cache
def _engine():
    net = builtin_net(STRUCTURE)
    units = make_unit_draws(net, DRAWS)(jax.random.key(0), SEEDS)
    init = jax.jit(jax.vmap(lambda units, hp: init_params(units, hp, net.layout), (None, 0)))
    return net, units, init


def engine_params(spec: TrialSpec, uniform_flag: bool = True) -> dict:
    """``{leaf path: (SEEDS, *leaf shape)}``: the initial parameters of ``spec``'s rows, one per
    seed, as the engine makes them (``uniform_flag=False``: a row without ``bias_uniform``, the
    engine before PyTorch's bias was uniform)."""
    net, units, init = _engine()
    row = row_hparams(spec, net.layout, STRUCTURE, DRAWS, 0)
    if not uniform_flag:
        row = row._replace(bias_uniform=None)
    rows = stack_rows([row._replace(seed=np.int32(s)) for s in range(SEEDS)])
    return {k: np.asarray(v) for k, v in flatten(jax.device_get(init(units, rows))).items()}


def framework_layers(framework: str, fan_in: int, fan_out: int, n: int, seed: int = 0):
    """``n`` untouched dense layers of the framework, built with no initializer given: kernels
    ``(n, fan_in, fan_out)`` (Flax layout) and biases ``(n, fan_out)``."""
    if framework == "torch":
        torch = pytest.importorskip("torch")
        torch.manual_seed(seed)
        layers = [torch.nn.Linear(fan_in, fan_out) for _ in range(n)]
        kernels = [m.weight.detach().numpy().T for m in layers]
        return np.stack(kernels), np.stack([m.bias.detach().numpy() for m in layers])
    if framework == "flax":
        import flax.linen as nn

        layer, x = nn.Dense(fan_out), jnp.zeros((1, fan_in))
        keys = jax.random.split(jax.random.key(seed), n)
        params = jax.vmap(lambda k: layer.init(k, x)["params"])(keys)
        return np.asarray(params["kernel"]), np.asarray(params["bias"])
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(seed)
    kernels, biases = [], []
    for _ in range(n):
        layer = keras.layers.Dense(fan_out)
        layer.build((None, fan_in))
        kernels.append(np.asarray(layer.kernel))
        biases.append(np.asarray(layer.bias))
    return np.stack(kernels), np.stack(biases)


def ks(ours: np.ndarray, theirs: np.ndarray) -> float:
    assert ours.size >= 20_000 and theirs.size >= 20_000
    return float(ks_2samp(ours.ravel(), theirs.ravel()).pvalue)


def check_support(values: np.ndarray, limit: float, what: str) -> None:
    """Never beyond the limit, and reaching it (a draw of the wrong scale fails one or other)."""
    top = float(np.abs(values).max())
    assert top <= limit * (1 + 1e-6), f"{what}: max |value| {top} > limit {limit}"
    assert top > 0.98 * limit, f"{what}: max |value| {top} never nears the limit {limit}"


@functools.cache
def compared(weights: str) -> dict:
    """Ours and the framework's values of every kernel and bias, pooled (same shapes, same
    counts), after checking every leaf's support on both sides."""
    framework = FRAMEWORK[weights]
    params = engine_params(trial(weights))
    net = builtin_net(STRUCTURE)
    fan_ins = bias_fan_ins(net.layout)
    out = {"ours_k": [], "theirs_k": [], "ours_b": [], "theirs_b": []}
    for leaf in net.layout.kernels:
        fan_in, fan_out = leaf.fan_shape
        bias_leaf = leaf.path.rsplit("/", 1)[0] + "/bias"
        assert fan_ins[bias_leaf] == fan_in
        # Biases are drawn only for torch (Flax's and Keras' are zeros, checked exactly).
        n_kernels = KERNEL_SEEDS * leaf.layers
        n_biases = SEEDS * leaf.layers if framework == "torch" else n_kernels
        kernels, biases = framework_layers(framework, fan_in, fan_out, n_biases)
        ours_k = params[leaf.path][:KERNEL_SEEDS].reshape(n_kernels, fan_in, fan_out)
        theirs_k = kernels[:n_kernels]
        assert np.unique(theirs_k[:, 0, 0]).size == n_kernels  # fresh layers, not one repeated
        limit = KERNEL_LIMIT[weights](fan_in, fan_out)
        check_support(ours_k, limit, f"ours {leaf.path}")
        check_support(theirs_k, limit, f"{framework} {leaf.path}")
        ours_b = params[bias_leaf].reshape(-1, fan_out)
        if framework == "torch":  # U(+-1/sqrt(fan_in)): torch.nn.Linear.reset_parameters
            check_support(ours_b, 1.0 / math.sqrt(fan_in), f"ours {bias_leaf}")
            check_support(biases, 1.0 / math.sqrt(fan_in), f"torch {bias_leaf}")
            assert ours_b.shape == biases.shape
        else:
            assert not ours_b.any() and not biases.any(), bias_leaf  # zeros, as the framework
        out["ours_k"].append(ours_k.ravel())
        out["theirs_k"].append(theirs_k.ravel())
        out["ours_b"].append(ours_b.ravel())
        out["theirs_b"].append(biases.ravel())
    return {k: np.concatenate(v) for k, v in out.items()}


@pytest.mark.parametrize("weights", FRAMEWORK_DEFAULTS)
def test_each_framework_default_draws_its_frameworks_kernels(weights):
    c = compared(weights)
    p = ks(c["ours_k"], c["theirs_k"])
    print(f"{weights} kernels: KS p = {p:.3g} ({c['ours_k'].size} vs {c['theirs_k'].size})")
    assert p > P_SAME


def test_torch_default_draws_torchs_uniform_bias():
    c = compared("torch_default")
    p = ks(c["ours_b"], c["theirs_b"])
    print(f"torch_default biases: KS p = {p:.3g} ({c['ours_b'].size} vs {c['theirs_b'].size})")
    assert p > P_SAME


def test_negative_control_a_normal_bias_of_torchs_std_is_rejected():
    """The engine before the fix drew PyTorch's bias as a normal of the same std (a row without
    ``bias_uniform``): same variance, wrong distribution, and the KS test above tells."""
    c = compared("torch_default")
    old = engine_params(trial("torch_default"), uniform_flag=False)
    normal = np.concatenate(
        [old[p].ravel() for p in ("input/bias", "hidden/dense/bias", "output/bias")]
    )
    assert normal.size == c["theirs_b"].size
    assert normal.std() == pytest.approx(torch_bias_std(WIDTH), rel=0.02)  # only the shape differs
    assert np.abs(normal).max() > 1.0 / math.sqrt(WIDTH)  # a normal leaves torch's support
    p = ks(normal, c["theirs_b"])
    print(f"negative control, normal bias of torch's std: KS p = {p:.3g}")
    assert p < P_DIFFERENT


@pytest.mark.parametrize("weights", FRAMEWORK_DEFAULTS)
def test_the_bias_flag_follows_the_bias_in_force(weights):
    net = builtin_net(STRUCTURE)
    n = len(net.layout.biases)

    def flags(**kw):
        return row_hparams(trial(weights, **kw), net.layout, STRUCTURE, DRAWS, 0).bias_uniform

    np.testing.assert_array_equal(flags(), [weights == "torch_default"] * n)  # init.bias=auto
    np.testing.assert_array_equal(flags(bias="torch_default"), [True] * n)
    for bias in ("zeros", "normal", "constant"):
        np.testing.assert_array_equal(flags(bias=bias), [False] * n)
        assert bias_draw(bias, weights) == "normal"


@pytest.mark.parametrize("activation", ["relu", "tanh", "leaky_relu", "selu"])
@pytest.mark.parametrize("weights", FRAMEWORK_DEFAULTS)
def test_gain_auto_is_the_frameworks_own_draw(weights, activation):
    """A framework default is defined at its own scale: ``auto`` is gain 1, as for the absolute
    initializers, and the engine's kernel scales are then gain 1's."""
    from pipeline.reuse import export

    assert resolve_gain(weights, "auto", activation, 0.2) == 1.0
    net = builtin_net(STRUCTURE)
    auto = row_hparams(
        trial(weights, "auto", activation=activation), net.layout, STRUCTURE, DRAWS, 0
    )
    one = row_hparams(trial(weights, "1", activation=activation), net.layout, STRUCTURE, DRAWS, 0)
    np.testing.assert_array_equal(auto.scale, one.scale)
    np.testing.assert_array_equal(auto.bias_std, one.bias_std)
    assert float(auto.gain) == 1.0
    assert export.init_spec(trial(weights, "auto", activation=activation).nested()).gain == 1.0


def test_he_and_glorot_still_follow_the_activation_with_gain_auto():
    assert resolve_gain("kaiming_uniform", "auto", "relu", 0.01) == pytest.approx(1.0)
    assert resolve_gain("glorot_uniform", "auto", "tanh", 0.01) == pytest.approx(5 / 3)


def _torch_biases(fan_in: int, fan_out: int, n: int) -> np.ndarray:
    return framework_layers("torch", fan_in, fan_out, n, seed=1)[1]


def test_make_bias_initializer_draws_torchs_uniform_bias():
    theirs = _torch_biases(WIDTH, 8192, 4)
    for init in (
        make_bias_initializer("torch_default", fan_in=WIDTH),
        make_bias_initializer("auto", fan_in=WIDTH, weights="torch_default"),
    ):
        ours = np.asarray(init(jax.random.key(0), (4 * 8192,)))
        check_support(ours, 1.0 / math.sqrt(WIDTH), "make_bias_initializer")
        p = ks(ours, theirs)
        print(f"make_bias_initializer torch_default: KS p = {p:.3g}")
        assert p > P_SAME
    # Every other bias is still mean + std * N(0, 1).
    z = jax.random.normal(jax.random.key(0), (64,))
    got = make_bias_initializer("normal", std=0.1)(jax.random.key(0), (64,))
    np.testing.assert_allclose(got, 0.1 * z, rtol=1e-6)


def test_the_best_entry_draws_torchs_uniform_bias(tmp_path):
    """``pipeline.load_bias_initializer`` and ``pipeline.init_params`` on a best entry of
    ``torch_default`` with ``init.bias=auto``: PyTorch's kernel and bias, the same numbers as
    ``make_bias_initializer`` for the same key."""
    import flax.linen as nn

    import pipeline
    from pipeline.reuse.best import write_best

    fan_out = 8192
    spec = trial("torch_default", "auto")
    entry = {**spec.nested(), "structure": {"n_features": WIDTH, "n_classes": 0}}
    entry["init"]["gain_value"] = 1.0
    path = write_best({"configs": [entry]}, tmp_path / "best.yaml")
    key = jax.random.key(3)
    direct = make_bias_initializer("auto", fan_in=WIDTH, weights="torch_default")
    loaded = pipeline.load_bias_initializer(path, fan_in=WIDTH)
    np.testing.assert_array_equal(loaded(key, (fan_out,)), direct(key, (fan_out,)))

    class Wide(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            return nn.Dense(fan_out, name="dense")(x)

    x = jnp.zeros((1, WIDTH))
    net_leaf = {leaf.path: leaf for leaf in as_net(Wide(), x).layout.leaves}
    ours_b, ours_k = [], []
    for i in range(3):
        params = flatten(pipeline.init_params(entry, Wide(), jax.random.key(i), x))
        ours_b.append(np.asarray(params["dense/bias"]))
        ours_k.append(np.asarray(params["dense/kernel"]))
        # The bias leaf's key is fold_in(fold_in(key, tag), layer): make_bias_initializer's draw.
        leaf_key = jax.random.fold_in(
            jax.random.fold_in(jax.random.key(i), net_leaf["dense/bias"].tag), 0
        )
        np.testing.assert_array_equal(ours_b[-1], direct(leaf_key, (fan_out,)))
    kernels, biases = framework_layers("torch", WIDTH, fan_out, 3, seed=2)
    ours_b, ours_k = np.concatenate(ours_b), np.stack(ours_k)
    check_support(ours_b, 1.0 / math.sqrt(WIDTH), "init_params bias")
    check_support(ours_k, 1.0 / math.sqrt(WIDTH), "init_params kernel")
    p_b, p_k = ks(ours_b, biases), ks(ours_k[0], kernels[0])
    print(f"pipeline.init_params torch_default: bias KS p = {p_b:.3g}, kernel KS p = {p_k:.3g}")
    assert p_b > P_SAME and p_k > P_SAME
