"""μP's per-layer learning rates and weight decay as optimizer code (issue 14): the engine's own
training steps equal the same steps through ``export.optax_for``, through the printed Optax
snippet and through PyTorch with ``export.torch_param_groups`` (and the printed PyTorch
snippet); the multipliers are Tensor Programs V's and the mup library's, written out here; SP's
update is still optax's own bit for bit; the best file records the multipliers."""

import functools
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optuna
import pytest
from conftest import TINY

from pipeline.config import SPEC_ATTR, TrialSpec, load_config
from pipeline.core.data import gaussian
from pipeline.core.model import Structure
from pipeline.core.net import builtin_net, flatten
from pipeline.core.train import Data, Settings, init_params, init_row, loss_fn, make_optimizer
from pipeline.core.train import train_step as engine_step
from pipeline.engine import draws_for
from pipeline.engine.rows import leaf_multipliers, row_hparams
from pipeline.reuse import export

# Width 32 against a base of 8: every multiplier of μP is a power of M = 4, far from 1.
WIDTH, BASE, M = 32, 8, 4.0
STRUCTURE = Structure("relu", 2, WIDTH, 16, 10)  # TINY's features and classes, depth 2
DRAWS = draws_for(["he_normal"])
LR = {"sgd": 0.1, "adam": 0.01}
WEIGHT_DECAY, WARMUP = 0.05, 2  # both on, so that every factor of the step is compared
MUP = [
    *TINY, "model.depth=2", f"model.width={WIDTH}", f"model.base_width={BASE}",
    "init.parametrization=mup", "init.bias=normal", "init.bias_std=0.1",
    f"train.weight_decay={WEIGHT_DECAY}", f"train.warmup_steps={WARMUP}",
]  # fmt: skip
# Two steps of batch 64 (the engine reads batches[seed, step]).
DATA = gaussian(10, 16, 320, 8, 6.0, 0)
SCHEDULE = np.arange(2 * 64, dtype=np.int32).reshape(1, 2, 64)

# Written out, not read from pipeline.core.parametrization: (lr, decay) multipliers per row of
# the exported table, m = width / base_width. Learning rates: Tensor Programs V, Table 3,
# relative to the base (SGD: input weights and width-sized biases x m, hidden x r_out/r_in = 1,
# read-out x 1/m; Adam: hidden and read-out x 1/m). Decay: microsoft/mup mup/optim.py (MuSGD: a
# vector-like group's weight_decay / m, a matrix's x fan-in/fan-out ratio; MuAdam: a matrix's
# x m), 1 / the rate, except the read-out under Adam: x m^2 (the library's MuReadout weight is m
# times ours and vector-like: its decay unscaled on it is m^2 on ours, Adam being scale-free).
HAND = {
    "sgd": {"input/bias": (M, 1 / M), "input/kernel": (M, 1 / M), "hidden/*bias": (M, 1 / M),
            "hidden/*kernel": (1.0, 1.0), "output/bias": (1.0, 1.0),
            "output/kernel": (1 / M, M)},
    "adam": {"input/bias": (1.0, 1.0), "input/kernel": (1.0, 1.0), "hidden/*bias": (1.0, 1.0),
             "hidden/*kernel": (1 / M, M), "output/bias": (1.0, 1.0),
             "output/kernel": (1 / M, M * M)},
}  # fmt: skip


def _trial(optimizer: str, *overrides: str) -> TrialSpec:
    optimizer_keys = [f"train.optimizer={optimizer}", f"train.learning_rate={LR[optimizer]}"]
    return TrialSpec.of_config(load_config([*MUP, *optimizer_keys, *overrides]))


@functools.cache
def _net_and_units():
    """The network and unit draws of one seed, drawn with NumPy (as test_mup.py does)."""
    net = builtin_net(STRUCTURE)
    rng = np.random.default_rng(0)
    units = {leaf.path: rng.standard_normal((1, 1, *leaf.shape)) for leaf in net.layout.kernels}
    units |= {leaf.path: rng.standard_normal((1, *leaf.shape)) for leaf in net.layout.biases}
    return net, jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), units)


def _batch(step: int):
    idx = SCHEDULE[0, step]
    return jnp.asarray(DATA[0][idx]), jnp.asarray(DATA[1][idx])


def _engine_steps(trial: TrialSpec):
    """The row's initial parameters and the engine's parameters after each of 2 steps."""
    net, units = _net_and_units()
    hp = row_hparams(trial, net.layout, STRUCTURE, DRAWS, 0)
    settings = Settings(trial["train.optimizer"], 64, 1, 0.9, 0.7, 1e3, 1e-6,
                        weight_decay=True, diagnostics=False)  # fmt: skip
    data = Data(*(jnp.asarray(a) for a in DATA[:4]), jnp.asarray(SCHEDULE))
    state = init_row(net, settings, hp, units, data)
    # Strong types throughout, as after a step: else the second step compiles again.
    state = jax.tree.map(lambda a: jnp.asarray(a, jnp.asarray(a).dtype), state)
    step = jax.jit(functools.partial(engine_step, net, settings))
    after = []
    for _ in range(2):
        state, _ = step(hp, jnp.bool_(True), data, state)
        after.append(state.params)
    return hp, init_params(units, hp, net.layout), after


@functools.cache
def _grad():
    """The gradient of the engine's loss, ``grad(params, hp, x, y)``, compiled once."""
    net, _ = _net_and_units()
    return jax.jit(jax.grad(lambda p, hp, x, y: loss_fn(net, p, hp, x, y)[0]))


def _optax_steps(tx, hp, params):
    """Two steps of an Optax transformation on the engine's loss and batches."""
    state, after = tx.init(params), []
    for k in range(2):
        updates, state = tx.update(_grad()(params, hp, *_batch(k)), state, params)
        params = optax.apply_updates(params, updates)
        after.append(params)
    return after


def _torch_mlp(params):
    """The MLP in PyTorch, named like ours (input, hidden.<i>, output), holding ``params``."""
    import torch

    class MLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.input = torch.nn.Linear(16, WIDTH)
            self.hidden = torch.nn.ModuleList([torch.nn.Linear(WIDTH, WIDTH)])
            self.output = torch.nn.Linear(WIDTH, 10)

        def forward(self, x):
            h = torch.relu(self.input(x))
            for layer in self.hidden:
                h = torch.relu(layer(h))
            return self.output(h)

    model, p = MLP(), flatten(params)
    layers = {"input": p["input/kernel"], "hidden.0": p["hidden/dense/kernel"][0],
              "output": p["output/kernel"]}  # fmt: skip
    biases = {"input": p["input/bias"], "hidden.0": p["hidden/dense/bias"][0],
              "output": p["output/bias"]}  # fmt: skip
    with torch.no_grad():
        for name, m in model.named_modules():
            if name in layers:
                m.weight.copy_(torch.from_numpy(np.asarray(layers[name]).T.copy()))
                m.bias.copy_(torch.from_numpy(np.asarray(biases[name]).copy()))
    return model


def _torch_steps(optimizer: str, params, groups_of):
    """Two steps of torch.optim SGD or Adam on the parameter groups ``groups_of(model)``, with
    warmup by LambdaLR: the final kernels (Flax layout) by our path."""
    import torch

    model = _torch_mlp(params)
    groups = groups_of(model)
    make = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    opt = make(groups, lr=LR[optimizer])
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / WARMUP))
    for k in range(2):
        x, y = (torch.from_numpy(np.array(a)) for a in _batch(k))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y.long()).backward()
        opt.step()
        scheduler.step()
    return {
        "input/kernel": model.input.weight.detach().numpy().T,
        "hidden/dense/kernel": model.hidden[0].weight.detach().numpy().T[None],
        "output/kernel": model.output.weight.detach().numpy().T,
        "input/bias": model.input.bias.detach().numpy(),
        "hidden/dense/bias": model.hidden[0].bias.detach().numpy()[None],
        "output/bias": model.output.bias.detach().numpy(),
    }


def _close(got: dict, expected: dict, rtol: float, atol: float, what: str) -> None:
    assert set(got) == set(expected)
    for path in expected:
        np.testing.assert_allclose(
            np.asarray(got[path]), np.asarray(expected[path]), rtol, atol, err_msg=f"{what} {path}"
        )


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_engines_mup_steps_are_the_exported_optax_and_torch_steps(optimizer):
    trial = _trial(optimizer)
    entry = trial.nested()  # what `make best` writes: the spec's sections
    rows = {r.glob: (r.lr, r.decay) for r in export.rate_table(entry)}
    assert rows == {g: pytest.approx(v) for g, v in HAND[optimizer].items()}  # not all 1
    hp, p0, engine = _engine_steps(trial)
    want = [flatten(p) for p in engine]

    # The engine's first SGD step written out: w - lr x warmup(0) x m (g + decay x d x w).
    if optimizer == "sgd":
        net, _ = _net_and_units()
        g = flatten(_grad()(p0, hp, *_batch(0)))
        lr_of = {leaf.path: m for leaf, m in zip(net.layout.leaves, leaf_multipliers(
            trial, net.layout, STRUCTURE))}  # fmt: skip
        for path, w in flatten(p0).items():
            m = lr_of[path]
            step = LR["sgd"] / WARMUP * m.lr * (g[path] + WEIGHT_DECAY * m.decay * w)
            np.testing.assert_allclose(want[0][path], w - step, rtol=1e-5, atol=1e-6)

    # (a) Optax: the live transformation, and the printed snippet's, exec'd.
    namespace: dict = {}
    exec(compile(export.snippet(entry, "flax"), "<flax snippet>", "exec"), namespace)
    for name, tx in (("optax_for", export.optax_for(entry)), ("snippet", namespace["tx"])):
        got = [flatten(p) for p in _optax_steps(tx, hp, p0)]
        for k in range(2):
            _close(got[k], want[k], 1e-5, 1e-6, f"{name} step {k}")

    # (b) PyTorch: torch_param_groups on torch.optim; the printed snippet's param_groups are
    # the same groups (parameters, rates and decays).
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed (pip install -e '.[torch]')")
    live = functools.partial(export.torch_param_groups, entry)
    got = _torch_steps(optimizer, p0, live)
    _close(got, want[1], 2e-4, 2e-5, "torch")  # float32 in two libraries: state tolerance
    namespace = {}
    exec(compile(export.snippet(entry, "torch"), "<torch snippet>", "exec"), namespace)
    model = _torch_mlp(p0)
    printed, groups = namespace["param_groups"](model), live(model)
    assert [(g["lr"], g["weight_decay"], [id(p) for p in g["params"]]) for g in printed] == [
        (g["lr"], g["weight_decay"], [id(p) for p in g["params"]]) for g in groups
    ]


def test_an_sp_row_updates_as_optax_own_chain_bit_for_bit():
    """row_hparams gives every row a per-leaf decay multiplier (1 under SP): with it the engine's
    chain is still optax's clip, add_decayed_weights, sgd / momentum / adam, bit for bit."""
    net, units = _net_and_units()
    trial = _trial("sgd", "init.parametrization=sp", "train.warmup_steps=0")
    hp = row_hparams(trial, net.layout, STRUCTURE, DRAWS, 0)  # the optimizer is not in it
    assert np.all(hp.decay_scale == 1.0) and np.all(hp.lr_scale == 1.0)
    lr, decay = hp.values["train.learning_rate"], hp.values["train.weight_decay"]
    kinds = {"sgd": optax.sgd(lr), "momentum": optax.sgd(lr, hp.values["train.momentum"]),
             "adam": optax.adam(lr)}  # fmt: skip
    txs = []
    for kind, direction in kinds.items():
        clip, add = optax.clip_by_global_norm(hp.clip_norm), optax.add_decayed_weights(decay)
        txs += [optax.chain(clip, add, direction), make_optimizer(kind, hp, True, net.layout)]
    params = init_params(units, hp, net.layout)
    grads = jax.tree.map(lambda p: jnp.sin(3 * p), params)
    out = jax.jit(functools.partial(_three_steps, txs))(params, grads)  # one compile for all
    for i, kind in enumerate(kinds):
        for a, b in zip(jax.tree.leaves(out[2 * i]), jax.tree.leaves(out[2 * i + 1])):
            np.testing.assert_array_equal(a, b, err_msg=kind)


def _three_steps(txs, params, grads):
    """Three updates of each transformation from the same parameters, with fixed gradients."""
    out = []
    for tx in txs:
        p, state = params, tx.init(params)
        for _ in range(3):
            updates, state = tx.update(grads, state, p)
            p = optax.apply_updates(p, updates)
        out.append(p)
    return out


def test_rates_reach_a_torch_resmlp_per_layer_with_depth_mups_branch_rule():
    """depth_mup on a post-norm residual MLP with Adam: inside a branch the rate is / sqrt(d),
    outside not, so blocks' biases and norm offsets need separate rows; every parameter of a
    PyTorch module with one block per layer gets the engine's multipliers of its leaf."""
    torch = pytest.importorskip("torch")
    overrides = ["model.kind=resmlp", "model.norm=post", "model.depth=4", "model.base_depth=1",
                 "init.parametrization=depth_mup", "train.learning_rate=0.01"]  # fmt: skip
    trial = _trial("adam", *overrides)
    structure = Structure("relu", 4, WIDTH, 16, 10, "resmlp", None, "post")
    layout = builtin_net(structure).layout
    engine = dict(zip((x.path for x in layout.leaves), leaf_multipliers(trial, layout, structure)))
    assert engine["blocks/fc1/bias"].lr == pytest.approx(1 / 2)  # 1 / sqrt(4): in the branch
    assert engine["blocks/norm/bias"].lr == 1.0  # a post-norm is after the sum
    assert engine["blocks/fc1/kernel"].lr == pytest.approx(1 / (2 * M))

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = torch.nn.Linear(WIDTH, WIDTH), torch.nn.Linear(WIDTH, WIDTH)
            self.norm, self.gate = torch.nn.LayerNorm(WIDTH), torch.nn.Parameter(torch.zeros(()))

    model = torch.nn.Module()
    model.input, model.output = torch.nn.Linear(16, WIDTH), torch.nn.Linear(WIDTH, 10)
    model.input_norm = torch.nn.LayerNorm(WIDTH)
    model.blocks = torch.nn.ModuleList([Block() for _ in range(4)])
    groups = export.torch_param_groups(trial.nested(), model)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    names = {"weight": {torch.nn.Linear: "kernel", torch.nn.LayerNorm: "scale"}}
    checked = 0
    for module_name, m in model.named_modules():
        for name, p in m.named_parameters(recurse=False):
            ours = names.get(name, {}).get(type(m), name)
            path = f"{module_name}.{ours}".replace(".", "/")
            if module_name.startswith("blocks."):  # blocks.<i>.fc1 -> the stacked blocks/fc1
                path = "blocks/" + path.split("/", 2)[2]
            assert lr_of[id(p)] == pytest.approx(0.01 * engine[path].lr), path
            assert decay_of[id(p)] == pytest.approx(WEIGHT_DECAY * engine[path].decay), path
            checked += 1
    assert checked == len(list(model.parameters()))


def test_the_best_file_records_the_multipliers_of_a_mup_trial(tmp_path):
    from pipeline.reuse.best import best_document, read_best, write_best

    study = optuna.create_study(study_name="mup")
    for value, trial in ((0.1, _trial("adam")), (0.2, _trial("adam", "init.parametrization=sp"))):
        study.add_trial(
            optuna.trial.create_trial(value=value, user_attrs={SPEC_ATTR: trial.flat()})
        )
    document = best_document(study, 2, {}, None, "in-memory")
    path = write_best(document, tmp_path / "mup.yaml")
    mup, sp = read_best(path, 0), read_best(path, 1)
    assert mup["init"]["parametrization"] == "mup"
    assert (mup["model"]["width"], mup["model"]["base_width"]) == (WIDTH, BASE)
    assert mup["model"]["base_depth"] is None  # null: the trial's own depth
    assert mup["lr_multipliers"] == pytest.approx({g: r[0] for g, r in HAND["adam"].items()})
    assert mup["weight_decay_multipliers"] == pytest.approx(
        {g: r[1] for g, r in HAND["adam"].items()}
    )
    assert "lr_multipliers" not in sp and "weight_decay_multipliers" not in sp
    # The file's entry exports as the spec does.
    assert export.rate_table(mup) == export.rate_table(_trial("adam").nested())
    assert "optax.multi_transform" in export.snippet(mup, "flax")
    # SP's snippet: one optimizer at the one learning rate, no per-parameter table
    assert "optax.multi_transform" not in export.snippet(sp, "flax")
    assert "optax.adam(learning_rate=learning_rate)" in export.snippet(sp, "flax")  # warmed up
