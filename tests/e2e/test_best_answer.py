"""`make best` writes the answer first: per network, the arm `recommend` recommends at its best
learning rate (LR*), then the fastest single trials; every export snippet carries the learning
rate. One small grid study (2 networks x 3 arms x a shared learning-rate grid, 3 seeds) is
shared by the module; what the file says is checked against `recommend --json` and the engine.
"""

import contextlib
import io
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import yaml
from conftest import TINY, run_cli

import pipeline
from pipeline.cli import main
from pipeline.config import TrialSpec, load_config
from pipeline.core.initializers import expected_std, make_initializer
from pipeline.reuse import export
from pipeline.reuse.best import config_overrides, read_best
from pipeline.search.study import make_storage, ranked_trials

os.environ.setdefault("KERAS_BACKEND", "jax")

SWEEP = [
    "tracking.enabled=false",
    "model.width=16",
    "train.steps=60",
    "train.eval_every_steps=20",
    "train.target_loss=1.0",
    "space.model.depth=[2,3]",
    "space.model.activation=[relu]",
    "space.init.weights=[he_normal,torch_default,orthogonal]",
    "space.train.learning_rate={low: 0.03, high: 1.0, log: true}",
    "study.grid_per_decade=2",
]
TOP = 3
SHAPE = (256, 256)
STD_RTOL = 0.10  # 65536 draws: the sample std's standard error is 0.3%


def _cli(*argv: str) -> tuple[str, str]:
    """``python -m pipeline *argv`` in this process: (stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    assert code == 0, err.getvalue()[-2000:]
    return out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """(best file, its document, recommend --json, best's stderr, the Optuna study)."""
    tmp = tmp_path_factory.mktemp("answer")
    run_cli(tmp, "sweep", *SWEEP)
    runs = f"runs_dir={tmp / 'runs'}"
    path = tmp / "best.yaml"
    _, table = _cli("best", runs, "tracking.enabled=false", "--top", str(TOP), "--out", str(path))
    answers = json.loads(_cli("recommend", runs, "--json")[0])
    import optuna

    stored = optuna.load_study(
        study_name="default", storage=make_storage(str(tmp / "runs" / "optuna.journal"))
    )
    return path, yaml.safe_load(path.read_text("utf-8")), answers, table, stored, runs


def _arm(network: dict, name: str) -> dict:
    return next(a for a in network["arms"] if a["arm"] == name)


def test_rank_0_is_the_first_networks_answer_at_its_best_learning_rate(study):
    path, document, answers, *_ = study
    first = next(n for n in answers["networks"] if n["recommended"])
    arm = _arm(first, first["recommended"][0])
    entry = document["configs"][0]
    assert entry["rank"] == 0 and entry["source"] == "recommendation"
    assert entry["init"]["weights"] == arm["weights"]
    assert entry["train"]["learning_rate"] == pytest.approx(arm["best_lr"], rel=1e-3)
    assert entry["provenance"]["trial"] == arm["trials_at_best_lr"][0]
    answer = entry["answer"]
    assert answer["network"] == first["network"] and answer["arm"] == arm["arm"]
    assert answer["recommended"] == first["recommended"]
    assert answer["learning_rate"] == entry["train"]["learning_rate"]
    assert answer["lr_basin"] == arm["basin"]
    assert answer["lr_within_1_5x"] == arm["within_1_5x"]
    assert (answer["steps"], answer["steps_ci"]) == (arm["steps"], arm["steps_ci"])
    assert answer["p_best"] == arm["p_best"] and answer["summary"] == first["summary"]
    # `train --config path --rank 0` retrains that trial: its sections, LR* included.
    layer = config_overrides(read_best(path, 0))
    assert layer["train"]["learning_rate"] == entry["train"]["learning_rate"]
    assert layer["model"]["depth"] == first["keys"]["model.depth"]


def test_one_answer_per_network_then_the_top_trials(study):
    _, document, answers, table, stored, _ = study
    answered = [n for n in answers["networks"] if n["recommended"]]
    assert len(answered) == 2  # the fixture: both networks have a recommendation
    configs = document["configs"]
    assert [c["rank"] for c in configs] == list(range(len(configs)))
    assert [c["source"] for c in configs] == ["recommendation"] * 2 + ["top trial"] * TOP
    for entry, network in zip(configs, answered):
        arm = _arm(network, network["recommended"][0])
        assert entry["answer"]["network"] == network["network"]
        assert entry["provenance"]["trial"] == arm["trials_at_best_lr"][0]
        assert entry["model"]["depth"] == network["keys"]["model.depth"]
        for key in ("measured", "provenance", "structure", "data", "metrics"):
            assert key in entry
    # The top trials as before: the fastest single trials, in order.
    want = [t.number for t in ranked_trials(stored)[:TOP]]
    assert [c["provenance"]["trial"] for c in configs[2:]] == want
    assert all("answer" not in c for c in configs[2:])
    missing = [n["network"] for n in answers["networks"] if not n["recommended"]]
    assert [m["network"] for m in document["not_recommended"]] == missing
    # The table output: the answers, then the top trials, then what rank 0 is.
    lines = table.splitlines()
    answer_rows = [i for i, line in enumerate(lines) if re.match(r"\s+rank \d+ +mlp", line)]
    first_row = next(i for i, line in enumerate(lines) if "│" in line)
    assert len(answer_rows) == 2 and answer_rows[-1] < first_row
    lr = configs[0]["train"]["learning_rate"]
    assert f"{configs[0]['answer']['arm']} at LR {lr:.3g}" in lines[answer_rows[0]]
    assert "rank 0 is the answer for " + answered[0]["network"] in table.replace("\n", " ")


def _engine_std(entry: dict) -> float:
    init = entry["init"]
    params = {k: init[k] for k in ("mode", "std", "limit", "value")}
    return expected_std(init["weights"], SHAPE, init["gain_value"], params)


def _exec(code: str) -> dict:
    namespace: dict = {}
    exec(compile(code, "<snippet>", "exec"), namespace)
    return namespace


@pytest.mark.parametrize("framework", ["flax", "torch", "keras"])
def test_each_snippet_builds_the_engines_layer_and_optimizer_at_lr_star(study, framework):
    _, document, *_ = study
    entry = document["configs"][0]
    lr, std = entry["train"]["learning_rate"], _engine_std(entry)
    code = export.snippet(entry, framework, "the answer")
    lo, hi = entry["answer"]["lr_basin"]
    assert (
        f"# learning rate {lr:.3g} (every seed reached the target from {lo:.3g} to {hi:.3g}" in code
    )
    if framework == "flax":
        from flax import nnx

        ns = _exec(code)
        layer = nnx.Linear(*SHAPE, kernel_init=ns["kernel_init"], bias_init=ns["bias_init"],
                           rngs=nnx.Rngs(0))  # fmt: skip
        kernel = np.asarray(layer.kernel[...])
        # The rate, as the optimizer applies it: SGD's first update of a unit gradient is -LR.
        params = {"w": jnp.zeros(3)}
        updates, _ = ns["optimizer"].update({"w": jnp.ones(3)}, ns["optimizer"].init(params))
        np.testing.assert_allclose(np.asarray(updates["w"]), -lr, rtol=1e-6)
    elif framework == "torch":
        torch = pytest.importorskip("torch")
        ns = _exec(code)
        torch.manual_seed(0)
        layer = ns["init_weights"](torch.nn.Linear(*SHAPE))
        kernel = layer.weight.detach().numpy()
        optimizer = ns["make_optimizer"](layer)
        assert isinstance(optimizer, torch.optim.SGD)
        assert [g["lr"] for g in optimizer.param_groups] == [lr]
        assert "torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)" in code
    else:
        keras = pytest.importorskip("keras")
        ns = _exec(code)
        keras.utils.set_random_seed(0)
        layer = keras.layers.Dense(SHAPE[1], kernel_initializer=ns["kernel_initializer"],
                                   bias_initializer=ns["bias_initializer"])  # fmt: skip
        layer.build((None, SHAPE[0]))
        kernel = np.asarray(layer.kernel)
        assert isinstance(ns["optimizer"], keras.optimizers.SGD)
        assert float(ns["optimizer"].learning_rate) == pytest.approx(lr, rel=1e-6)  # float32
    assert kernel.shape == SHAPE
    assert float(np.std(kernel)) == pytest.approx(std, rel=STD_RTOL)


def test_best_format_prints_the_answer_first_with_its_learning_rate(study):
    pytest.importorskip("torch")
    path, document, _, _, _, runs = study
    out, _ = _cli("best", runs, "tracking.enabled=false", "--top", "1", "--format", "torch",
                  "--out", str(path.with_name("best_torch.yaml")))  # fmt: skip
    blocks = [b for b in re.split(r"^(?=# --- rank )", out, flags=re.M) if b.strip()]
    assert len(blocks) == 3  # two answers, one top trial
    entry = document["configs"][0]
    assert blocks[0].startswith(f"# --- rank 0: {entry['init']['weights']}·")
    assert f"the answer for {entry['answer']['network']}" in blocks[0].splitlines()[0]
    lr = entry["train"]["learning_rate"]
    assert f"LEARNING_RATE = {float(f'{lr:.8g}')!r}" in blocks[0]
    ns = _exec(blocks[0])
    import torch

    assert ns["make_optimizer"](torch.nn.Linear(2, 2)).param_groups[0]["lr"] == lr


def test_load_initializer_rank_0_is_the_recommended_arms(study):
    path, document, answers, *_ = study
    first = next(n for n in answers["networks"] if n["recommended"])
    arm = _arm(first, first["recommended"][0])
    entry = document["configs"][0]
    init = pipeline.load_initializer(path, rank=0)
    params = {k: entry["init"][k] for k in ("mode", "std", "limit", "value")}
    ours = make_initializer(arm["weights"], arm["gain"], params)
    key = jax.random.key(3)
    np.testing.assert_allclose(np.asarray(init(key, SHAPE)), np.asarray(ours(key, SHAPE)),
                               rtol=1e-6)  # fmt: skip
    assert float(np.std(np.asarray(init(key, SHAPE)))) == pytest.approx(
        _engine_std(entry), rel=STD_RTOL
    )


# --- the printed optimizer is the engine's (no study) ----------------------------------------

SP = [*TINY, "model.depth=2", "train.learning_rate=0.3"]
CHAINS = {
    "sgd": [],
    "momentum": ["train.warmup_steps=3", "train.clip_norm=0.5", "train.weight_decay=0.05"],
    "adam": ["train.weight_decay=0.05", "train.warmup_steps=2"],
}


def _three_steps(tx, params, grads):
    p, state, out = params, tx.init(params), []
    for k in range(3):
        scaled = {name: g * (k + 1) for name, g in grads.items()}  # a new gradient each step
        updates, state = tx.update(scaled, state, p)
        p = optax.apply_updates(p, updates)
        out.append(p)
    return out


@pytest.mark.parametrize("kind", list(CHAINS))
def test_the_printed_sp_optimizers_step_as_the_engine(kind):
    """The Flax snippet's ``optimizer`` and the PyTorch snippet's ``make_optimizer`` (with its
    scheduler and clipping) take the engine's steps (``make_optimizer``: clip, L2 decay,
    direction, the warmed-up rate)."""
    from pipeline.core.model import Structure
    from pipeline.core.net import builtin_net
    from pipeline.core.train import make_optimizer
    from pipeline.engine import draws_for
    from pipeline.engine.rows import row_hparams

    trial = TrialSpec.of_config(load_config([*SP, f"train.optimizer={kind}", *CHAINS[kind]]))
    entry = trial.nested()
    structure = Structure("relu", 2, 16, 16, 10)
    net = builtin_net(structure)
    hp = row_hparams(trial, net.layout, structure, draws_for(["he_normal"]), 0)
    # The engine's chain with no layout: every leaf's multiplier 1, as under sp.
    engine = make_optimizer(kind, hp, bool(trial["train.weight_decay"]), None)
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.standard_normal((4, 3)), jnp.float32)}
    grads = {"w": jnp.asarray(rng.standard_normal((4, 3)), jnp.float32)}
    ns = _exec(export.snippet(entry, "flax"))
    got = _three_steps(ns["optimizer"], params, grads)
    want = _three_steps(engine, params, grads)
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a["w"]), np.asarray(b["w"]), rtol=1e-5, atol=1e-7)
    torch = pytest.importorskip("torch")
    ns = _exec(export.snippet(entry, "torch"))
    w = torch.nn.Parameter(torch.from_numpy(np.asarray(params["w"]).copy()))
    holder = torch.nn.Module()
    holder.w = w
    opt = ns["make_optimizer"](holder)
    scheduler = ns["make_scheduler"](opt) if "make_scheduler" in ns else None
    clip = trial["train.clip_norm"]
    for k in range(3):
        opt.zero_grad()
        w.grad = torch.from_numpy(np.asarray(grads["w"]) * (k + 1))
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(holder.parameters(), clip)
        opt.step()
        if scheduler is not None:
            scheduler.step()
        np.testing.assert_allclose(w.detach().numpy(), np.asarray(want[k]["w"]), rtol=2e-4,
                                   atol=2e-5, err_msg=f"torch step {k}")  # fmt: skip
