"""Parametrizations (init.parametrization: sp, mup, ntk, depth_mup), per-layer learning rates,
warmup and the coordinate check (issue 14): steps written out by hand, vmapped equals alone, μP
at the base width is SP, the coordinate check's slopes, and refusals."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY

from pipeline.config import ConfigError, TrialSpec, load_config
from pipeline.core.data import gaussian
from pipeline.core.model import Structure
from pipeline.core.net import Leaf, builtin_net, flatten, unflatten
from pipeline.core.parametrization import (
    LeafScaling,
    multipliers,
    roles_by_fans,
    roles_by_shapes,
)
from pipeline.core.train import (
    Data,
    Hparams,
    Settings,
    init_params,
    make_optimizer,
)
from pipeline.engine import draws_for
from pipeline.engine.rows import leaf_multipliers, residual_row, row_hparams, stack_rows
from pipeline.engine.run import batched_train

# Width 32 against a base of 8: every multiplier of μP is a power of m = 4, far from 1.
WIDTH, BASE, M = 32, 8, 4.0
STRUCTURE = Structure("relu", 3, WIDTH, 16, 10)  # TINY's features and classes, 3 layers
DRAWS = draws_for(["he_normal"])
MUP = [*TINY, "model.depth=3", f"model.width={WIDTH}", f"model.base_width={BASE}"]


@functools.cache
def _net_and_units():
    """The network and unit draws of one seed, drawn with NumPy (the engine's sampler is tested
    in test_train.py; compiling it here would double these tests' time)."""
    net = builtin_net(STRUCTURE)
    rng = np.random.default_rng(0)
    units = {leaf.path: rng.standard_normal((1, 1, *leaf.shape)) for leaf in net.layout.kernels}
    units |= {leaf.path: rng.standard_normal((1, *leaf.shape)) for leaf in net.layout.biases}
    return net, jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), units)


def _trial(*overrides: str) -> TrialSpec:
    return TrialSpec.of_config(load_config([*MUP, *overrides]))


def _initial(trial: TrialSpec):
    net, units = _net_and_units()
    hp = row_hparams(trial, net.layout, STRUCTURE, DRAWS, 0)
    return hp, init_params(units, hp, net.layout)


# One batch of 64 per step, 5 steps; the hand-written step reads the first.
DATA = gaussian(10, 16, 320, 8, 6.0, 0)
SCHEDULE = np.arange(5 * 64, dtype=np.int32).reshape(1, 5, 64)


@functools.cache
def _calls(optimizer: str):
    """Jitted init and one-step chunk of ``optimizer``, shared by the tests below (a call of
    one row compiles once for the hand-written step and the rows trained alone)."""
    settings = Settings(optimizer, 64, 1, 0.9, 0.7, 1e3, 1e-6, diagnostics=False)
    net, _ = _net_and_units()
    return batched_train(net, settings)


def _train(optimizer: str, rows: list, steps: int):
    """``rows`` trained together in one vmapped call per step: (final params, [rows, steps])."""
    _, units = _net_and_units()
    init_fn, chunk_fn = _calls(optimizer)
    data = Data(*(jnp.asarray(a) for a in DATA[:4]), jnp.asarray(SCHEDULE))
    hps = stack_rows(rows)  # the parametrizations differ only in traced numbers
    state, losses = init_fn(hps, units, data), []
    for _ in range(steps):
        state, out = chunk_fn(state, hps, jnp.ones(len(rows), bool), data)
        losses.append(out.loss[:, 0])
    return state.params, jnp.stack(losses, axis=1)


def _hand_forward(p, x):
    """The MLP in plain jnp: relu(x W + b) through the input and hidden layers, then logits."""
    h = jax.nn.relu(x @ p["input"]["kernel"] + p["input"]["bias"])
    for w, b in zip(p["hidden"]["dense"]["kernel"], p["hidden"]["dense"]["bias"]):
        h = jax.nn.relu(h @ w + b)
    return h @ p["output"]["kernel"] + p["output"]["bias"]


def _hand_loss(p, x, y):
    logits = _hand_forward(p, x)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1))


# Tensor Programs V, Table 3, relative to the base width (m = width / base_width), written out
# here rather than read from pipeline.core.parametrization: SGD input weights and all biases of
# width-sized layers x m (fan_out), hidden x 1, read-out x 1/m; Adam hidden and read-out x 1/m.
HAND_LR = {
    "sgd": {"input/kernel": M, "input/bias": M, "hidden/dense/kernel": 1.0,
            "hidden/dense/bias": M, "output/kernel": 1 / M, "output/bias": 1.0},
    "adam": {"input/kernel": 1.0, "input/bias": 1.0, "hidden/dense/kernel": 1 / M,
             "hidden/dense/bias": 1.0, "output/kernel": 1 / M, "output/bias": 1.0},
}  # fmt: skip


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_one_mup_step_equals_the_step_written_out_by_hand(optimizer):
    lr = 0.1
    trial = _trial(
        f"train.optimizer={optimizer}", f"train.learning_rate={lr}", "init.parametrization=mup",
        "init.bias=normal", "init.bias_std=0.1",
    )  # fmt: skip
    hp, p0 = _initial(trial)
    # μP's read-out starts at 1/sqrt(m) of SP's (variance 1/fan_in^2), on the same unit draws.
    _, sp = _initial(trial.with_values({"init.parametrization": "sp"}))
    np.testing.assert_allclose(p0["output"]["kernel"], sp["output"]["kernel"] / math.sqrt(M))
    np.testing.assert_array_equal(p0["hidden"]["dense"]["kernel"], sp["hidden"]["dense"]["kernel"])

    params, _ = _train(optimizer, [hp], steps=1)
    x, y = jnp.asarray(DATA[0][:64]), jnp.asarray(DATA[1][:64])  # the first step's batch
    hand_grads = jax.jit(jax.grad(_hand_loss))(p0, x, y)
    grads, start, got = (flatten(t) for t in (hand_grads, p0, params))
    assert set(HAND_LR[optimizer]) == set(got)  # every leaf is written out below
    for path, mult in HAND_LR[optimizer].items():
        g = grads[path]
        if optimizer == "adam":  # Adam's first step, bias-corrected: g / (sqrt(g^2) + eps)
            g = g / (jnp.abs(g) + 1e-8)
        expected = start[path] - lr * mult * g
        np.testing.assert_allclose(got[path][0], expected, rtol=2e-5, atol=2e-6, err_msg=path)


def test_rows_of_different_parametrizations_train_in_one_call_as_each_alone():
    base = _trial("train.optimizer=adam", "train.learning_rate=0.02")
    trials = [base.with_values({"init.parametrization": p}) for p in ("sp", "mup", "ntk")]
    rows = [_initial(t)[0] for t in trials]
    params, loss = _train("adam", rows, steps=5)
    for i, row in enumerate(rows):
        alone_params, alone_loss = _train("adam", [row], steps=5)
        np.testing.assert_allclose(alone_loss[0], loss[i], rtol=1e-5, atol=1e-6)
        for a, b in zip(jax.tree.leaves(alone_params), jax.tree.leaves(params)):
            np.testing.assert_allclose(a[0], b[i], rtol=1e-4, atol=1e-6)
    assert np.abs(loss[0, 1:] - loss[1, 1:]).max() > 1e-3  # sp and mup train differently
    assert np.abs(loss[0, 1:] - loss[2, 1:]).max() > 1e-3  # and ntk


def test_mup_at_the_base_width_is_exactly_sp():
    # Read-out rule: variance 1/fan_in^2 relative to the base (std x 1/sqrt(m)); m = 1 here.
    sp = _trial("init.bias=normal", "init.bias_std=0.1", "train.optimizer=adam")
    same = sp.with_values({"init.parametrization": "mup", "model.base_width": WIDTH})
    (hp_sp, p_sp), (hp_mu, p_mu) = _initial(sp), _initial(same)
    np.testing.assert_array_equal(hp_mu.lr_scale, np.ones_like(hp_mu.lr_scale))
    for a, b in zip(jax.tree.leaves(p_sp), jax.tree.leaves(p_mu)):
        np.testing.assert_array_equal(a, b)
    net, _ = _net_and_units()
    x = jnp.asarray(gaussian(10, 16, 32, 8, 6.0, 0)[0])
    np.testing.assert_array_equal(net.apply(p_mu, x, hp_mu), net.apply(p_sp, x, hp_sp))
    # Away from the base the same trial is not SP: the read-out starts smaller.
    _, p_far = _initial(same.with_values({"model.base_width": BASE}))
    assert float(jnp.std(p_far["output"]["kernel"])) < 0.6 * float(
        jnp.std(p_sp["output"]["kernel"])
    )


def test_warmup_scales_the_learning_rate_of_step_k_by_min_1_k_plus_1_over_w():
    lr, w = 0.1, 4
    values = {"train.learning_rate": jnp.float32(lr), "train.warmup_steps": jnp.float32(w)}
    hp = Hparams(*([None] * 6), jnp.float32(jnp.inf), *([None] * 3), values=values)
    params = {"a": jnp.zeros(3)}
    grads = {"a": jnp.array([1.0, -2.0, 0.5])}
    for kind in ("sgd", "adam"):
        tx = make_optimizer(kind, hp, decay=False)
        state = tx.init(params)
        for k in range(6):
            updates, state = tx.update(grads, state, params)
            direction = grads["a"] if kind == "sgd" else jnp.sign(grads["a"])  # Adam's g/|g|
            expected = -lr * min(1.0, (k + 1) / w) * direction
            # Adam's bias corrections (1 - 0.9^k, 1 - 0.999^k) round in float32: 1e-5.
            np.testing.assert_allclose(updates["a"], expected, rtol=3e-5, err_msg=f"{kind} {k}")


# An SP row's update is optax's own chain bit for bit: tests/engine/test_export_mup.py.


# Calibrated on a 3-layer ReLU MLP (gaussian data, Adam, lr 0.01, batch 64, 2 seeds, widths 64,
# 256, 1024; 3 runs with train.seed 0, 1, 2). Measured slopes of log mean|x| against log width:
# μP layers within +-0.06 at every step; its logits -0.39..-0.49 at initialization (the read-out's
# std ~ width^-1/2 on Θ(1) features: slope -1/2), then -0.14..-0.02. SP after one step: the last
# hidden layer +0.80..+0.87 and the logits +1.69..+1.74 (Adam moves every entry of a width x width
# matrix by ~lr, so a pre-activation by ~lr x width). Thresholds sit halfway to the next regime.
def test_coordinate_check_is_flat_under_mup_and_grows_under_sp_with_adam():
    from pipeline.reports.coord_check import coord_data, slopes

    cfg = load_config([*TINY, "model.depth=3", "model.width=64", "train.optimizer=adam",
                       "train.learning_rate=0.01"])  # fmt: skip
    base = TrialSpec.of_config(cfg)
    trials = [base.with_values({"init.parametrization": p}) for p in ("sp", "mup")]
    data = coord_data(cfg, trials, (64, 256, 1024), seeds=2, steps=3, batch=64)
    assert data.layers == ("input", "hidden_1", "hidden_2", "logits")
    s = slopes(data)  # [trials, steps + 1, layers]
    sp, mup = s[0], s[1]
    assert np.all(np.abs(mup[:, :-1]) < 0.15), mup
    assert -0.65 < mup[0, -1] < -0.3, mup  # the logits at initialization: width^-1/2
    assert np.all((mup[1:, -1] > -0.3) & (mup[1:, -1] < 0.15)), mup
    assert np.all(np.abs(sp[0]) < 0.15), sp  # at initialization SP is as flat as μP
    assert sp[1, 1:-1].max() > 0.3 and sp[1, -1] > 1.0, sp


def _leaves(width: int) -> list[Leaf]:
    """A user's residual module at ``width`` (examples/resnet.py's shapes): 30 features, 2
    outputs, one block of LayerNorm and a width x width layer."""
    dense = [("embed", 30, width), ("blocks/0/fc", width, width), ("head", width, 2)]
    out = [Leaf("blocks/0/norm/scale", (width,), "other", 0, (), "LayerNorm")]
    for name, n_in, n_out in dense:
        out.append(Leaf(f"{name}/kernel", (n_in, n_out), "kernel", 0, (n_in, n_out), "Linear"))
        out.append(Leaf(f"{name}/bias", (n_out,), "bias", 0, (), "Linear"))
    return out


def test_roles_are_inferred_from_shapes_as_the_mup_library_does():
    # Roles from which dimensions change at twice the width, ratios to the base width (8).
    roles = dict(
        zip((x.path for x in _leaves(32)), roles_by_shapes(_leaves(32), _leaves(8), _leaves(64)))
    )
    assert roles["embed/kernel"] == LeafScaling("input", 1.0, 4.0)
    assert roles["blocks/0/fc/kernel"] == LeafScaling("hidden", 4.0, 4.0)
    assert roles["head/kernel"] == LeafScaling("readout", 4.0, 1.0)
    assert roles["head/bias"].role == "fixed"
    assert roles["blocks/0/norm/scale"] == roles["embed/bias"] == LeafScaling("vector", 1.0, 4.0)
    # A factory without ``width``: read by its fans (input: fan_in = features; read-out: fan_out
    # = outputs), the same roles.
    by_fans = roles_by_fans(_leaves(32), 30, 2, 4.0)
    assert [s.role for s in by_fans] == [r.role for r in roles.values()]
    # NTK (Jacot et al. 2018) on SP's variable: SGD rate 1/r_in, Adam 1/sqrt(r_in).
    hidden = roles["blocks/0/fc/kernel"]
    assert multipliers("ntk", hidden, adam=False).lr == pytest.approx(0.25)
    assert multipliers("ntk", hidden, adam=True).lr == pytest.approx(0.5)
    # depth_mup: Adam's rate inside a branch x 1/sqrt(depth / base_depth).
    branch = hidden._replace(branch=True)
    assert multipliers("depth_mup", branch, adam=True, depth_ratio=4.0).lr == pytest.approx(1 / 8)
    assert multipliers("depth_mup", branch, adam=False, depth_ratio=4.0).lr == pytest.approx(1.0)


def test_depth_mup_scales_each_branch_and_its_adam_rate_by_the_depth_ratio():
    trial = TrialSpec.of_config(
        load_config(
            [
                *TINY,
                "model.kind=resmlp",
                "model.depth=8",
                "model.base_depth=2",
                "model.norm=pre",
                "train.optimizer=adam",
                "init.parametrization=depth_mup",
            ]
        )  # fmt: skip
    )
    assert float(residual_row(trial).alpha) == pytest.approx(0.5)  # 1/sqrt(8 / 2)
    structure = Structure("relu", 8, 16, 16, 10, "resmlp", None, "pre")
    layout = builtin_net(structure).layout
    rates = dict(zip((x.path for x in layout.leaves), leaf_multipliers(trial, layout, structure)))
    # base_width = width: only the depth rule acts, on the branches' leaves (pre-norm included).
    assert rates["blocks/fc1/kernel"].lr == rates["blocks/norm/scale"].lr == pytest.approx(0.5)
    assert rates["input/kernel"].lr == rates["output/kernel"].lr == 1.0
    # A gated branch (ReZero) is gate x 1/sqrt(d): with every gate at g, depth_mup's network is
    # SP's with every gate at g / 2.
    net = builtin_net(structure)
    rezero = trial.with_values({"init.residual": "rezero"})
    sp = rezero.with_values({"init.parametrization": "sp"})
    rng = np.random.default_rng(0)
    params = {
        leaf.path: jnp.asarray(rng.standard_normal(leaf.shape) * 0.3, jnp.float32)
        for leaf in layout.leaves
    }
    x = jnp.asarray(rng.standard_normal((8, 16)), jnp.float32)

    def logits(t: TrialSpec, gate: float):
        hp = row_hparams(t, layout, structure, DRAWS, 0)
        return net.apply(unflatten(params | {"blocks/gate": jnp.full((8,), gate)}), x, hp)

    np.testing.assert_allclose(logits(rezero, 0.6), logits(sp, 0.3), rtol=1e-5, atol=1e-6)
    assert np.abs(logits(rezero, 0.6) - logits(sp, 0.6)).max() > 1e-2


@pytest.mark.parametrize(
    "override, expected",
    [
        ("init.parametrization=mu", "one of sp, mup, ntk, depth_mup"),
        ("model.base_width=0", "null (model.width) or an integer from 1 to 8192"),
        ("model.base_depth=-2", "null (model.depth) or an integer from 1 to"),
        ("train.warmup_steps=-1", "an integer >= 0"),
        ("init.parametrization=depth_mup", "needs model.kind=resmlp or transformer"),
    ],
)
def test_bad_values_of_the_new_keys_are_one_line_naming_what_is_allowed(override, expected):
    with pytest.raises(ConfigError) as e:
        load_config([*TINY, override])
    assert expected in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("parametrization", ["mup", "ntk", "sp"])  # depth_mup: MLP refused
def test_the_export_carries_the_parametrizations_initial_scales(parametrization):
    """Every layer's exported std (`pipeline.export.init_spec` per layer path, the rules the
    snippets and to_flax/to_keras/to_torch apply) is the engine's initial std of that layer:
    μP's read-out x (base/width)^(1/2) included; the snippet's optimizer has the per-layer
    rates (tests/engine/test_export_mup.py runs it)."""
    from pipeline.core.initializers import compute_fans, weight_scale
    from pipeline.reuse import export

    trial = _trial(f"init.parametrization={parametrization}", "train.optimizer=adam")
    hp, _ = _initial(trial)
    net, _ = _net_and_units()
    entry = {s: {k.split(".", 1)[1]: v for k, v in trial.flat().items() if k.startswith(s + ".")}
             for s in ("init", "model", "train")}  # fmt: skip
    for i, leaf in enumerate(net.layout.kernels):
        layer = leaf.path.rsplit("/", 1)[0]
        spec = export.init_spec(entry, layer)
        std = weight_scale(spec.weights, compute_fans(leaf.fan_shape), spec.gain, spec._asdict())
        assert std == pytest.approx(float(hp.scale[i]), rel=1e-5), leaf.path
    text = export.snippet(entry, "torch")
    if parametrization == "sp":
        assert "init.parametrization" not in text
    else:
        # Adam, width 32 over 8: μP's hidden and read-out rates / 4, NTK's / 2 (1/sqrt(r)).
        rate = {"mup": 0.25, "ntk": 0.5}[parametrization]
        assert f'("hidden/*kernel", {rate!r}' in text and "torch.optim.Adam" in text
