"""Your own network: any Flax module (linen or NNX) through the model interface, per-parameter
init rules, the factory's errors, and the best file initializing the same module again."""

from __future__ import annotations

import contextlib
import io
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import BASE, train_trials

from pipeline.cli import main
from pipeline.config import Space, TrialSpec
from pipeline.core.initializers import expected_std
from pipeline.core.train import init_params
from pipeline.core.unit_draws import make_unit_draws
from pipeline.engine import Engine, row_hparams
from pipeline.engine.datasets import load_dataset

# 16 features = 4x4 images for the linen module's convolution; width 64 for tight variances.
LINEN = """
import flax.linen as nn


class Net(nn.Module):
    width: int
    n_classes: int

    @nn.compact
    def __call__(self, x, train=False):
        h = x.reshape(x.shape[0], 4, 4, 1)
        h = nn.relu(nn.Conv(self.width, (3, 3), name="conv")(h)).mean(axis=(1, 2))
        h = nn.relu(nn.Dense(self.width, name="hidden")(h))
        h = h + nn.Dense(self.width, name="out_proj")(nn.LayerNorm(name="norm")(h))
        return nn.Dense(self.n_classes, name="head")(h)


def make(width, n_classes):
    return Net(width, n_classes)
"""

NNX = """
import jax
from flax import nnx


class Net(nnx.Module):
    def __init__(self, n_features, width, n_classes, rngs):
        self.embed = nnx.Linear(n_features, width, rngs=rngs)
        self.norm = nnx.LayerNorm(width, rngs=rngs)
        self.out_proj = nnx.Linear(width, width, rngs=rngs)
        self.head = nnx.Linear(width, n_classes, rngs=rngs)

    def __call__(self, x, train=False):
        h = jax.nn.relu(self.embed(x))
        h = h + self.out_proj(self.norm(h))
        return self.head(h)


def make(n_features, width, n_classes):
    return Net(n_features, width, n_classes, nnx.Rngs(0))
"""

SOURCES = {"linen": LINEN, "nnx": NNX}
KERNELS = {
    "linen": ["conv/kernel", "hidden/kernel", "out_proj/kernel", "head/kernel"],
    "nnx": ["embed/kernel", "out_proj/kernel", "head/kernel"],
}


@pytest.fixture
def factory(tmp_path, monkeypatch):
    """Write a module file in a folder on the path; ``factory(kind)`` is its factory spec."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(kind: str, source: str | None = None, name: str | None = None) -> str:
        name = name or f"user_{kind}_{tmp_path.name.replace('-', '_')}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source or SOURCES[kind]))
        return f"{name}:make"

    return write


def _engine(cfg):
    return Engine(
        cfg, load_dataset(cfg.data), Space.parse({"init.weights": ["he_normal", "zeros"]})
    )


def _init(engine, trial):
    """A trial's initial parameters, as the engine computes them (seed 0)."""
    structure = engine.structure_of(trial)
    net = engine.net(structure)
    units = make_unit_draws(net, engine.draws)(jax.random.key(0), 1)
    hp = row_hparams(trial, net.layout, structure, engine.draws, 0)
    return net, init_params(units, hp, net.layout)


def _flat(params):
    from pipeline.core.net import flatten

    return {k: np.asarray(v) for k, v in flatten(params).items()}


@pytest.mark.parametrize("kind", ["linen", "nnx"])
def test_every_leaf_has_the_initializers_variance_and_rules_hit_exactly_their_paths(
    tiny_cfg, factory, kind
):
    cfg = tiny_cfg("model.kind=custom", f"model.factory={factory(kind)}", "model.width=64")
    engine = _engine(cfg)
    base = TrialSpec.of_config(cfg).with_values({"init.weights": "he_normal", "init.gain": 1.5})
    net, plain = _init(engine, base)
    assert [leaf.path for leaf in net.layout.kernels] == KERNELS[kind]  # in call order
    plain = _flat(plain)
    for leaf in net.layout.kernels:  # fans per leaf, a convolution's included
        want = expected_std("he_normal", leaf.fan_shape, 1.5, {"mode": "fan_in"})
        assert plain[leaf.path].std() == pytest.approx(want, rel=0.1), leaf.path
    rules = [
        {"match": "head/kernel", "scale": 0},
        {"match": "*out_proj/kernel", "weights": "zeros"},
        {"match": "*/bias", "bias": "constant", "bias_value": 0.5},
        {"match": "embed/kernel", "scale": "1/sqrt(2*depth)"},
    ]
    ruled = _flat(_init(engine, base.with_values({"init.rules": rules}))[1])
    assert not ruled["head/kernel"].any() and not ruled["out_proj/kernel"].any()
    for path, value in ruled.items():
        if path.endswith("/bias") and not path.startswith("norm"):
            np.testing.assert_array_equal(value, 0.5)
        elif path == "embed/kernel":
            depth = cfg.model.depth
            np.testing.assert_allclose(value, plain[path] / np.sqrt(2 * depth), rtol=1e-6)
        elif path not in ("head/kernel", "out_proj/kernel"):
            np.testing.assert_array_equal(value, plain[path])  # untouched
    np.testing.assert_array_equal(ruled["norm/scale"], 1.0)  # the module's own LayerNorm init


@pytest.mark.parametrize("kind", ["linen", "nnx"])
def test_vmapped_training_of_custom_trials_equals_each_alone(tiny_cfg, factory, kind):
    cfg = tiny_cfg("model.kind=custom", f"model.factory={factory(kind)}", "train.seeds=2")
    variants = [
        {"init.weights": "he_normal", "init.gain": 1.0},
        {"init.weights": "glorot_uniform", "init.rules": [{"match": "head/kernel", "scale": 0}]},
    ]
    together, engine = train_trials(cfg, *variants)
    assert engine.stats.executables == 1
    for variant, batched in zip(variants, together):
        [alone], _ = train_trials(cfg, variant, weights=["he_normal", "glorot_uniform"])
        np.testing.assert_allclose(
            alone.curves["loss"][1], batched.curves["loss"][1], rtol=2e-4, atol=1e-5
        )
    assert np.isfinite(together[0].curves["loss"][1]).all()


def test_the_best_entry_initializes_the_users_module_per_path(tiny_cfg, factory, tmp_path):
    import importlib

    import pipeline
    from pipeline.reuse.best import write_best

    spec = factory("nnx")
    cfg = tiny_cfg("model.kind=custom", f"model.factory={spec}", "model.width=64")
    rules = [
        {"match": "head/kernel", "scale": 0},
        {"match": "out_proj/kernel", "weights": "normal", "std": 0.2, "scale": "1/sqrt(depth)"},
    ]
    trial = TrialSpec.of_config(cfg).with_values(
        {"init.weights": "lecun_normal", "init.rules": rules}
    )
    entry = {**trial.nested(), "structure": {"n_features": 16, "n_classes": 4}}
    module = importlib.import_module(spec.split(":")[0]).make(16, 64, 4)
    x = jnp.zeros((2, 16))
    params = _flat(pipeline.init_params(entry, module, jax.random.key(3), x))
    assert not params["head/kernel"].any()
    depth = cfg.model.depth
    assert params["out_proj/kernel"].std() == pytest.approx(0.2 / np.sqrt(depth), rel=0.1)
    want = expected_std("lecun_normal", (16, 64), 1.0, {"mode": "fan_in"})
    assert params["embed/kernel"].std() == pytest.approx(want, rel=0.1)
    np.testing.assert_array_equal(np.asarray(module.head.kernel[...]), 0.0)  # updated in place
    best = write_best({"configs": [entry]}, tmp_path / "best.yaml")
    init = pipeline.load_initializer(best, param="out_proj/kernel")
    assert float(init(jax.random.key(0), (256, 256)).std()) == pytest.approx(
        0.2 / np.sqrt(depth), rel=0.05
    )
    assert not pipeline.load_initializer(best, param="head/kernel")(jax.random.key(0), (8, 4)).any()


def _run(*args, runs):
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main([*args, f"runs_dir={runs}"])
    lines = [line for line in (err.getvalue() + out.getvalue()).splitlines() if line.strip()]
    return code, lines


def test_a_bad_factory_or_rule_is_one_line_exit_2_and_no_study(factory, tmp_path):
    wrong_shape = LINEN.replace("nn.Dense(self.n_classes", "nn.Dense(self.n_classes + 1")
    cases = {
        "no module": ("no_such_module:make", [], "cannot import 'no_such_module'"),
        "no function": (factory("linen").replace(":make", ":missing"), [], "has no function"),
        "not a module": (factory("x", "def make():\n    return 3\n"), [], "not a Flax module"),
        "raises": (
            factory("y", "def make(width):\n    raise RuntimeError('bad width')\n"),
            [],
            "raised RuntimeError: bad width",
        ),
        "unknown parameter": (
            factory("z", "def make(widthh):\n    pass\n"),
            [],
            "its parameter 'widthh'",
        ),
        "wrong output": (factory("w", wrong_shape), [], "expected logits of shape (2, 10)"),
        "rule matches nothing": (
            factory("linen"),
            ["init.rules=[{match: 'c_proj/kernel', scale: 0}]"],
            "matches no parameter",
        ),
        "bad rule key": (
            factory("linen"),
            ["init.rules=[{match: head/kernel, sclae: 0}]"],
            "'sclae'",
        ),
        "bad rule value": (
            factory("linen"),
            ["init.rules=[{match: head/kernel, weights: he}]"],
            "weights='he' is invalid",
        ),
    }
    tiny = [*BASE, "data.features=16", "data.samples=256", "data.val_samples=64", "train.steps=50"]
    for case, (spec, extra, words) in cases.items():
        runs = tmp_path / f"runs-{case.replace(' ', '-')}"
        code, lines = _run(
            "sweep", "model.kind=custom", f"model.factory={spec}", *tiny, *extra, runs=runs
        )
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (case, lines)
        assert words in lines[0], (case, lines[0])
        assert not (runs / "optuna.journal").exists() and not (runs / "mlflow.db").exists(), case
    code, lines = _run("sweep", "model.kind=custom", runs=tmp_path / "r")
    assert code == 2 and "needs model.factory" in lines[0]


@pytest.mark.slow
def test_the_example_sweeps_end_to_end_and_its_best_file_initializes_the_module(tmp_path):
    """The README's three commands, from a folder of the user's own: the example module (found
    on PYTHONPATH), its .npz, `sweep --experiment your_model`, `best`, then one call."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import optuna
    import yaml
    from conftest import run_cli
    from mlflow.tracking import MlflowClient

    import pipeline
    from pipeline.config import SPEC_ATTR
    from pipeline.engine.datasets import sha256
    from pipeline.search.study import make_storage

    repo = Path(__file__).resolve().parents[2]
    data = tmp_path / "bc.npz"
    env = {**os.environ, "PYTHONPATH": str(repo)}
    subprocess.run([sys.executable, str(repo / "examples" / "make_data.py"), str(data)], check=True)
    args = ["--experiment", "your_model", f"data.path={data}", "study.n_trials=4"]
    args += ["study.batch_size=4", "train.steps=100"]
    out = run_cli(tmp_path, "sweep", *args, env=env)
    assert "4/4" in out.stderr

    storage = make_storage(str(tmp_path / "runs" / "optuna.journal"))
    study = optuna.load_study(study_name="your_model", storage=storage)
    specs = [t.user_attrs[SPEC_ATTR] for t in study.trials]
    assert {s["model.factory"] for s in specs} == {"examples.resnet:make_model"}
    assert {s["data.sha256"] for s in specs} == {sha256(data)}
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("your_model")
    children = client.search_runs([experiment.experiment_id], "tags.trial_number != ''")
    assert len(children) == 4
    for run in children:  # each child run says what it was found on
        assert run.data.params["model.factory"] == "examples.resnet:make_model"
        assert run.data.params["data.sha256"] == sha256(data)

    best = tmp_path / "best.yaml"
    out = run_cli(tmp_path, "best", "study.name=your_model", "--out", str(best), env=env)
    assert "pipeline.init_params" in out.stderr
    entry = yaml.safe_load(best.read_text())["configs"][0]
    assert entry["structure"] == {"n_features": 30, "n_classes": 2}

    # The user's code: build the module, one call initializes it as the best trial was.
    from examples.resnet import make_model

    module = make_model(depth=entry["model"]["depth"], width=entry["model"]["width"])
    params = pipeline.init_params(best, module, jax.random.key(0), jnp.zeros((1, 30)))
    rules = entry["init"]["rules"]
    projections = [p for p in _flat(params) if p.endswith("out_proj/kernel")]
    assert projections
    for path in projections:
        w = np.asarray(module.blocks[int(path.split("/")[1])].out_proj.kernel[...])
        np.testing.assert_array_equal(w, _flat(params)[path])  # the module holds them
        if any(r.get("weights") == "zeros" for r in rules):
            assert not w.any()

    # `train --config` retrains the best trial to the metrics the sweep stored.
    report = run_cli(tmp_path, "train", "--config", str(best), "--json", env=env).stdout
    report = json.loads(report[report.index("{") :])
    trial = study.trials[entry["provenance"]["trial"]]  # rank 0: the answer, or the top trial
    assert report["steps_to_target"] == trial.user_attrs["metrics"]["steps_to_target"]


def test_a_zero_readout_rule_on_the_builtin_mlp_starts_at_log_classes(tiny_cfg):
    # Rules apply to every model kind: a zero read-out makes every logit 0 at the start, so the
    # initial loss is exactly ln(classes) (the cross-entropy of the uniform prediction).
    import math

    cfg = tiny_cfg("model.depth=3")
    zero, plain = train_trials(cfg, {"init.rules": [{"match": "output/kernel", "scale": 0}]}, {})[0]
    n_classes = load_dataset(cfg.data).n_classes
    assert zero.metrics["initial_train_loss"] == pytest.approx(math.log(n_classes), abs=1e-6)
    assert plain.metrics["initial_train_loss"] != pytest.approx(math.log(n_classes), abs=1e-3)
